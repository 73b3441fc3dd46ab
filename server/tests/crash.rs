//! Acknowledged means durable (DESIGN.md promise 3): a writer adds lessons as fast as the node
//! acknowledges them while the node is killed with SIGKILL at random moments, many times over.
//! After every restart each acknowledged lesson is there and the store opens cleanly.
//!
//! `SFS_CRASH_KILLS` sets the number of kills (default 200; the long mode uses more).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::OfflineCity;
use rand::Rng;

#[test]
fn every_acknowledged_write_survives_sigkill_at_random_moments() {
    let kills: usize = std::env::var("SFS_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let city = OfflineCity::prepare(dir.path(), &dir.path().join("data"), "editor");
    let (token, ca) = (city.token.clone(), city.ca.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::thread_rng();
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut last_run: Vec<String> = Vec::new();
    let mut writes = 0usize;
    for kill in 0..kills {
        let (mut node, api) = city.start(&[]);
        let kill_after = Duration::from_millis(rng.gen_range(0..60));
        let pid = node.child.id();
        runtime.block_on(async {
            let mut client = sfs_client::Client::connect(&api, &token, &ca)
                .await
                .unwrap();
            // The writes acknowledged just before the last kill are there, and so many lessons
            // in all as were ever acknowledged (a write cut off before its acknowledgement may
            // or may not have made it; every lesson is checked once more at the end).
            for name in &last_run {
                if let Err(err) = client.get_lesson(name).await {
                    panic!("after kill {kill}: acknowledged {name} is lost: {err}");
                }
            }
            let page = client
                .list_lessons_page("cities/lund", 1, "")
                .await
                .unwrap();
            assert!(
                page.total_size as usize >= acknowledged.len(),
                "after kill {kill}: {} lessons, {} acknowledged",
                page.total_size,
                acknowledged.len()
            );
            last_run.clear();
            // Write as fast as acknowledgements come; the kill is armed once the first write
            // is acknowledged, so it always lands while writes are in flight.
            let mut killer = None;
            for i in 0.. {
                let title = format!("k{kill}-w{i}");
                match client.create_lesson(&title, "durable", vec![]).await {
                    Ok(lesson) => {
                        acknowledged.insert(title);
                        last_run.push(lesson.name);
                        writes += 1;
                        if killer.is_none() {
                            killer = Some(tokio::spawn(async move {
                                tokio::time::sleep(kill_after).await;
                                let _ = Command::new("kill")
                                    .args(["-KILL", &pid.to_string()])
                                    .status();
                            }));
                        }
                    }
                    Err(_) => break,
                }
            }
            killer.expect("at least one write").await.unwrap();
        });
        let _ = node.child.wait();
    }
    // One last start: everything is there, and nothing was written twice.
    let (mut node, api) = city.start(&[]);
    runtime.block_on(async {
        let mut client = sfs_client::Client::connect(&api, &token, &ca)
            .await
            .unwrap();
        let lessons = client.list_lessons("cities/lund").await.unwrap();
        let titles: BTreeSet<String> = lessons.iter().map(|l| l.title.clone()).collect();
        assert!(acknowledged.is_subset(&titles));
        assert_eq!(titles.len(), lessons.len(), "no lesson appears twice");
    });
    let _ = node.child.kill();
    let _ = node.child.wait();
    eprintln!("{kills} kills, {writes} acknowledged writes, none lost");
    assert!(
        writes > kills,
        "the writer got writes in ({writes} in {kills} runs)"
    );
}
