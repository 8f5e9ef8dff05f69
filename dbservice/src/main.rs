//! `rosey-dbservice` binary.
fn main() {}
