//! Integration tests of the bot against a real nats-server (natskit) and, in `flows`, the real
//! database service in-process. One test binary; modules by concern.

mod correlation;
mod flows;
mod fuzz;
mod resilience;
mod shell;
mod support;
