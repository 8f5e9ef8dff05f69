//! The knee search (`harness::scenarios::knee`) against a stand-in service of known capacity: a
//! responder that commits one event per 500 µs (2,000 events/s), driven by the phase engine
//! through a real nats-server, must find its knee within 10 %.

use harness::load::{self, Ids, PhaseSpec, Proof, Script};
use harness::publishers::Publishers;
use harness::scenarios::knee::{judge, Criteria, Limit, Search, SearchSpec, StepFigures};
use harness::scenarios::responder::{Answer, Responder, ResponderSpec};
use std::time::Duration;

#[test]
fn a_knee_search_finds_a_stand_ins_known_capacity_within_ten_percent() {
    let _alone = crate::alone();
    let nats = natskit::NatsServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        const SERVICE: Duration = Duration::from_micros(500);
        let capacity = 1.0 / SERVICE.as_secs_f64();
        let subject = "bench.knee-test.events";
        let stand_in = Responder::start(
            nats.url(),
            ResponderSpec {
                subject: subject.into(),
                answer: Answer::CommitNotice {
                    subject: rosey_protocol::subjects::COMMITTED.into(),
                },
                delay: SERVICE,
                service_time: SERVICE,
                spin: Duration::from_micros(100),
                stall: None,
            },
        )
        .await
        .unwrap();
        let listener = load::connect(nats.url(), "knee-test").await.unwrap();
        let senders = Publishers::connect(nats.url(), "knee-test", 1)
            .await
            .unwrap();
        // What this test checks is the search, not how quiet the machine is: a schedule limit
        // no loaded test machine reaches, and an objective far above the stand-in's 0.5 ms.
        let criteria = Criteria {
            slo_p99_ns: 50_000_000,
            min_achieved_fraction: 0.99,
            send_delay_limit_us: 1e6,
        };
        let mut search = Search::new(SearchSpec {
            start_per_s: 500.0,
            max_per_s: 20_000.0,
            growth: 2.0,
            resolution: 0.05,
            confirmations: 2,
            max_steps: 16,
        });
        while let Some(rate) = search.next() {
            let k = search.steps().len();
            let spec = PhaseSpec {
                id_prefix: format!("knee-test.k{k}."),
                rate_per_s: Some(rate),
                count: (rate * 1.5) as u64,
                ..PhaseSpec::new(
                    senders.clone(),
                    Script::uniform(subject, harness::scenarios::message_log_payload(32)),
                    Proof::CommitNotices(Ids::Direct),
                    Duration::from_secs(20),
                )
            };
            let out = load::run_phase(&listener, spec, &indicatif::ProgressBar::hidden())
                .await
                .unwrap();
            let r = &out.record;
            let figures = StepFigures {
                offered_per_s: rate,
                achieved_per_s: r.commit_rate_per_s().unwrap_or(0.0),
                lost: r.lost(),
                proven: r.latency.len(),
                p99_ns: r.latency.value_at_quantile(0.99),
                send_delay_p99_us: out.send.send_delay.value_at_quantile(0.99) as f64 / 1e3,
            };
            let verdict = judge(&figures, &criteria);
            eprintln!("knee test: {rate}/s: {} ({figures:?})", verdict.text());
            search.record(rate, verdict);
        }
        stand_in.stop().await.unwrap();
        let knee = search.knee();
        assert_eq!(knee.limit, Limit::Service, "{:?}", search.steps());
        let rate = knee.rate_per_s.unwrap();
        assert!(
            (rate - capacity).abs() <= 0.1 * capacity,
            "knee {rate}/s against a capacity of {capacity}/s: {:?}",
            search.steps()
        );
        // Beyond the capacity the stand-in falls behind: the first failing rate is not below it.
        assert!(knee.upper_per_s.unwrap() >= capacity, "{knee:?}");
    });
}
