//! The scenarios of BENCHMARKS.md, each measured against raw Automerge in the same run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sfs_client::v1 as pb;
use sfs_node::domain::method;
use sfs_sync::{DocPersist, PersistKind, ShareableDocId};

use crate::cluster::{self, wait_all_linked, wait_for, Cluster, EmulatedCity, DEADLINE};
use crate::raw;

/// How big each scenario is.
pub struct Sizes {
    pub quick: bool,
    pub writes_one_client: usize,
    pub write_clients: usize,
    pub writes_per_client: usize,
    pub propagation_samples: usize,
    pub bulk_lessons: usize,
    pub cities: usize,
    pub idle: Duration,
    pub startup_docs: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            quick: false,
            writes_one_client: 2_000,
            write_clients: 16,
            writes_per_client: 250,
            propagation_samples: 200,
            bulk_lessons: 10_000,
            cities: 290,
            idle: Duration::from_secs(60),
            startup_docs: 1_000,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            quick: true,
            writes_one_client: 40,
            write_clients: 4,
            writes_per_client: 10,
            propagation_samples: 10,
            bulk_lessons: 200,
            cities: 8,
            idle: Duration::from_secs(2),
            startup_docs: 50,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// Raw Automerge on the same workload, in the same unit, when there is one.
    pub raw: Option<f64>,
    /// `value / raw`.
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

struct Report {
    figures: Vec<Figure>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        scenario: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
        raw: Option<f64>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let figure = Figure {
            scenario,
            figure: figure.into(),
            value,
            unit,
            raw,
            ratio: raw.filter(|r| *r > 0.0).map(|r| value / r),
            target: target.into(),
            met,
        };
        println!(
            "{}",
            serde_json::to_string(&figure).expect("figures serialise")
        );
        self.figures.push(figure);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs the scenarios (all, or those named in `only`) and returns every figure.
pub async fn run(sizes: &Sizes, only: &[String]) -> anyhow::Result<Vec<Figure>> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut report = Report {
        figures: Vec::new(),
    };
    if wanted("privacy") {
        privacy_guard(sizes, &mut report);
    }
    if wanted("storage") {
        durable_write(sizes, &mut report)?;
    }
    if wanted("costs") {
        automerge_costs(sizes, &mut report);
    }
    let ca;
    if wanted("writes") || wanted("propagation") || wanted("bulk") || wanted("footprint") {
        let mut cluster = Cluster::with_hub()?;
        ca = cluster.ca_pem.clone();
        cluster.add_city("lund")?;
        cluster.add_city("malmo")?;
        cluster.start_city("lund").await?;
        cluster.start_city("malmo").await?;
        if wanted("writes") {
            writes(&cluster, &ca, sizes, &mut report).await?;
        }
        if wanted("propagation") {
            let held = lessons_held(&cluster, "lund", "lund").await?;
            propagation(&cluster, &ca, sizes, held, &mut report).await?;
        }
        if wanted("bulk") || wanted("footprint") {
            bulk(&mut cluster, &ca, sizes, &mut report).await?;
            if wanted("propagation") {
                let held = lessons_held(&cluster, "lund", "lund").await?;
                propagation(&cluster, &ca, sizes, held, &mut report).await?;
            }
            let held = lessons_held(&cluster, "lund", "lund").await?;
            disk_footprint(&mut cluster, held, &mut report).await?;
        }
    }
    if wanted("reconnect") {
        reconnect_many_documents(sizes, &mut report).await?;
    }
    if wanted("fanout") || wanted("reconnect") || wanted("idle") || wanted("footprint") {
        national_scale(sizes, &wanted, &mut report).await?;
    }
    // Not in the full run unless named: it starts a county hub process per county.
    if only.iter().any(|o| o == "counties") {
        counties(sizes, &mut report).await?;
    }
    Ok(report.figures)
}

/// One durable write of about 1 KB: the node's store (journal and sled) against sled flushed
/// and fsynced per write (the store before the journal) and a write plus `fdatasync` of a file
/// of its own (the disk's limit).
fn durable_write(sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let writes = if sizes.quick { 50 } else { 2000 };
    let measured = crate::storage::measure(writes)?;
    let ways = [
        (
            "the node's store (journal, then sled at checkpoints)",
            measured.store,
        ),
        (
            "sled flushed and its data file fsynced",
            measured.sled_fsync,
        ),
    ];
    for (way, (median, p99)) in ways {
        for (what, value, raw) in [
            ("median", median, measured.disk.0),
            ("p99", p99, measured.disk.1),
        ] {
            report.add(
                "storage",
                format!("durable write of 1 KB, {way}, {what} (ms)"),
                ms(value),
                "ms",
                Some(ms(raw)),
                "",
                None,
            );
        }
    }
    Ok(())
}

/// What Automerge itself costs per lesson, at the writer and at a replica, in documents of
/// 2,000 and 16,200 lessons: what every node pays before the network, the disk and the API.
fn automerge_costs(sizes: &Sizes, report: &mut Report) {
    let (bases, rounds): (&[usize], usize) = if sizes.quick {
        (&[200], 10)
    } else {
        (&[2_000, 16_200], 50)
    };
    for &base in bases {
        let costs = raw::costs(base, rounds);
        for (what, value) in [
            ("commit of a new lesson at the writer", costs.commit),
            ("apply of that change at a replica", costs.apply),
            (
                "apply of eight such changes in one call, per change",
                costs.apply_eight,
            ),
            (
                "the new change taken back by its hash",
                costs.change_by_hash,
            ),
            (
                "sync message generated for a replica in step",
                costs.generate,
            ),
        ] {
            report.add(
                "costs",
                format!("{what}, document of {base} lessons, median (ms)"),
                ms(value),
                "ms",
                None,
                "",
                None,
            );
        }
    }
}

/// The privacy guard's cost for a 4 KB lesson with 1,000 contact names (target ≤ 1 ms).
fn privacy_guard(sizes: &Sizes, report: &mut Report) {
    let rounds = if sizes.quick { 50 } else { 2000 };
    let crate::privacy::Measured {
        build,
        median,
        p99,
        edit,
        touched,
        decode,
    } = crate::privacy::measure(1000, 4096, rounds);
    report.add(
        "privacy",
        "guard built for 1,000 contact names and 50 deny-list words (ms)",
        ms(build),
        "ms",
        None,
        "once per register version",
        None,
    );
    report.add(
        "privacy",
        "guard check of a 4 KB lesson, 1,000 contacts, median (ms)",
        ms(median),
        "ms",
        None,
        "≤ 1 ms",
        Some(median <= Duration::from_millis(1)),
    );
    report.add(
        "privacy",
        "guard check of a 4 KB lesson, 1,000 contacts, 99th percentile (ms)",
        ms(p99),
        "ms",
        None,
        "≤ 1 ms",
        Some(p99 <= Duration::from_millis(1)),
    );
    report.add(
        "privacy",
        "whole edit judged (4 KB body, title, 20 tags), median (ms)",
        ms(edit),
        "ms",
        None,
        "",
        None,
    );
    report.add(
        "privacy",
        "of which finding what the change touched, from its columns, median (ms)",
        ms(touched),
        "ms",
        Some(ms(decode)),
        "raw: Automerge decoding the change (the earlier way)",
        None,
    );
}

/// How many lessons of `of_city` the node `at` lists.
async fn lessons_held(cluster: &Cluster, at: &str, of_city: &str) -> anyhow::Result<usize> {
    let mut client = cluster.cities[at].client(&cluster.ca_pem).await?;
    let page = client
        .list_lessons_page(&format!("cities/{of_city}"), 1, "")
        .await?;
    Ok(page.total_size as usize)
}

async fn write_lessons(
    client: &mut sfs_client::Client,
    from: usize,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::with_capacity(count);
    for i in from..from + count {
        let (title, body, tags) = raw::lesson(i);
        names.push(client.create_lesson(&title, &body, tags).await?.name);
    }
    Ok(names)
}

/// Writes `total` lessons at `node` with `clients` concurrent clients; returns the time taken.
async fn write_concurrently(
    node: &cluster::NodeProcess,
    ca: &str,
    clients: usize,
    per_client: usize,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let mut tasks = Vec::new();
    let mut connected = Vec::new();
    for _ in 0..clients {
        connected.push(node.client(ca).await?);
    }
    let started = Instant::now();
    for (c, mut client) in connected.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            write_lessons(&mut client, 1_000_000 + c * per_client, per_client).await
        }));
    }
    let mut last_names = Vec::new();
    for task in tasks {
        last_names.extend(task.await??.pop());
    }
    Ok((started.elapsed(), last_names))
}

/// Waits until `node` holds at least `total` lessons of Lund. Changes to one document are
/// applied in the order they were made, so it first waits (cheaply, by name) for the last
/// lesson of every writer, then checks the count once with a listing (which reads every lesson,
/// too costly to poll while the node is busy syncing).
async fn wait_for_lessons(
    node: &cluster::NodeProcess,
    ca: &str,
    last_names: &[String],
    total: usize,
) -> anyhow::Result<()> {
    let client = node.client(ca).await?;
    wait_for("the last lesson of every writer arrives", || {
        let mut client = client.clone();
        async move {
            for name in last_names {
                client.get_lesson(name).await.ok()?;
            }
            Some(())
        }
    })
    .await?;
    wait_for("every lesson is listed", || {
        let mut client = client.clone();
        async move {
            let page = client.list_lessons_page("cities/lund", 1, "").await.ok()?;
            (page.total_size as usize >= total).then_some(())
        }
    })
    .await
}

/// Calls `call` (with the call's number) 200 times a second until `stop` is set: a steady
/// rate, as pages and integrations make calls, not a caller at full speed that would measure
/// how it takes the cores from the writers. The latency of each call.
fn paced<F, Fut>(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut call: F,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>
where
    F: FnMut(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded: the writers end the loop, or at most this many calls.
        for i in 0..1_000_000usize {
            pace.tick().await;
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let started = Instant::now();
            call(i).await?;
            latencies.push(started.elapsed());
        }
        latencies.sort();
        Ok(latencies)
    })
}

async fn writes(
    cluster: &Cluster,
    ca: &str,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let lund = &cluster.cities["lund"];
    let mut client = lund.client(ca).await?;
    let n = sizes.writes_one_client;
    let started = Instant::now();
    let written = write_lessons(&mut client, 0, n).await?;
    let one = n as f64 / started.elapsed().as_secs_f64();
    let raw_rate = raw::commit_rate(0, n);
    report.add(
        "writes",
        "one client, durable (lessons/s)",
        one,
        "1/s",
        Some(raw_rate),
        "≥ 0.25 × raw commit rate",
        Some(one >= 0.25 * raw_rate),
    );
    // An API reader beside the writers: reads never wait for a sync (ARCHITECTURE.md, the
    // write path), so their latency should stay small while the writers keep the disk busy.
    // Beside it, on a connection of its own, the standard health check: a call that reads no
    // document, whose latency is what the loaded machine itself adds to any call.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (client, names) = (lund.client(ca).await?, written.clone());
        paced(stop.clone(), move |i| {
            let (mut client, name) = (client.clone(), names[i % names.len()].clone());
            async move {
                client.get_lesson(&name).await?;
                Ok(())
            }
        })
    };
    let health = {
        let client = lund.client(ca).await?;
        paced(stop.clone(), move |_| {
            let mut client = client.clone();
            async move {
                anyhow::ensure!(client.serving().await?, "lund is not serving");
                Ok(())
            }
        })
    };
    let (took, _) =
        write_concurrently(lund, ca, sizes.write_clients, sizes.writes_per_client).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, checks) = (reader.await??, health.await??);
    let writers = sizes.write_clients;
    for (what, latencies, target) in [
        (
            format!("API read (GetLesson) under {writers} writers"),
            reads,
            true,
        ),
        (
            format!("health check (no document) under {writers} writers: the machine's share"),
            checks,
            false,
        ),
    ] {
        if latencies.is_empty() {
            continue;
        }
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        report.add(
            "writes",
            format!("{what}, p50 (ms)"),
            ms(p50),
            "ms",
            None,
            "",
            None,
        );
        report.add(
            "writes",
            format!("{what}, p99 (ms; {} calls)", latencies.len()),
            ms(p99),
            "ms",
            None,
            if target { "≤ 2 ms" } else { "" },
            target.then_some(p99 <= Duration::from_millis(2)),
        );
    }
    let total = sizes.write_clients * sizes.writes_per_client;
    let many = total as f64 / took.as_secs_f64();
    report.add(
        "writes",
        format!("{} clients, durable (lessons/s)", sizes.write_clients),
        many,
        "1/s",
        Some(raw_rate),
        "≥ 0.5 × raw commit rate",
        Some(many >= 0.5 * raw_rate),
    );
    // What the two targets leave for everything but Automerge: each lesson is committed at
    // Lund and applied at the hub and at Malmö, all on this machine's cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let middle = sizes.writes_one_client + total / 2;
    let work = raw::costs(middle, if sizes.quick { 16 } else { 128 });
    report.add(
        "writes",
        format!(
            "Automerge's work alone (commit at lund, apply at the hub and malmo; \
             {middle}-lesson document) on {cores} cores (lessons/s)"
        ),
        work.lessons_per_second_here(2),
        "1/s",
        Some(raw_rate),
        "the most any build could reach here",
        None,
    );
    for (name, node) in [
        ("lund", lund),
        ("the hub", &cluster.hub),
        ("malmo", &cluster.cities["malmo"]),
    ] {
        let made = messages_made(node).await?;
        let total = made.0 + made.1;
        report.add(
            "writes",
            format!("sync messages made from recent changes at {name} ({total} in all, %)"),
            if total == 0 {
                0.0
            } else {
                100.0 * made.0 as f64 / total as f64
            },
            "%",
            None,
            "",
            None,
        );
    }
    Ok(())
}

/// Sync messages a node made since it started: (from recent changes, by Automerge).
async fn messages_made(node: &cluster::NodeProcess) -> anyhow::Result<(u64, u64)> {
    let text = cluster::scrape(node.metrics.context("metrics address")?).await?;
    let value = |made_by: &str| {
        cluster::metric(
            &text,
            &format!("sfs_sync_messages_made{{made_by=\"{made_by}\"}}"),
        )
        .map_or(0, |v| v as u64)
    };
    Ok((value("recent_changes"), value("automerge")))
}

/// Creates one lesson at a time at `from` (numbered from `first`) until `to` returns it, for
/// every propagation sample; the times, sorted.
async fn lessons_until_listed(
    from: &mut sfs_client::Client,
    to: &mut sfs_client::Client,
    sizes: &Sizes,
    first: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    // One lesson first, not measured: changes to one document arrive in the order they were
    // made, so once it is at `to`, so is everything written before (the scenario before this
    // one may leave a backlog that would otherwise be timed as the first samples).
    for i in 0..=sizes.propagation_samples {
        let (title, body, tags) = raw::lesson(first + i);
        let started = Instant::now();
        let lesson = from.create_lesson(&title, &body, tags).await?;
        loop {
            if to.get_lesson(&lesson.name).await.is_ok() {
                break;
            }
            if started.elapsed() > DEADLINE {
                bail!("lesson {} never arrived", lesson.name);
            }
            tokio::task::yield_now().await;
        }
        if i > 0 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok(times)
}

async fn propagation(
    cluster: &Cluster,
    ca: &str,
    sizes: &Sizes,
    held: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut lund = cluster.cities["lund"].client(ca).await?;
    let mut malmo = cluster.cities["malmo"].client(ca).await?;
    let times = lessons_until_listed(&mut lund, &mut malmo, sizes, 2_000_000).await?;
    let mut hops = raw::TwoHops::new(held);
    let mut raw_times: Vec<Duration> = (0..sizes.propagation_samples)
        .map(|_| hops.propagate_one())
        .collect();
    raw_times.sort();
    let raw_median = ms(percentile(&raw_times, 0.5));
    let median = ms(percentile(&times, 0.5));
    let label = format!("document of {held} lessons");
    report.add(
        "propagation",
        format!("median, {label} (ms)"),
        median,
        "ms",
        Some(raw_median),
        "≤ 2 × raw two hops; ≤ 10 ms (5 × faster than automerge-repo's 50 ms)",
        Some(median <= 2.0 * raw_median && median <= 10.0),
    );
    report.add(
        "propagation",
        format!("p90, {label} (ms)"),
        ms(percentile(&times, 0.9)),
        "ms",
        Some(ms(percentile(&raw_times, 0.9))),
        "",
        None,
    );
    let p99 = ms(percentile(&times, 0.99));
    report.add(
        "propagation",
        format!("p99, {label} (ms)"),
        p99,
        "ms",
        Some(ms(percentile(&raw_times, 0.99))),
        "≤ 3 × the median",
        Some(p99 <= 3.0 * median),
    );
    Ok(())
}

async fn bulk(
    cluster: &mut Cluster,
    ca: &str,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let before = lessons_held(cluster, "lund", "lund").await?;
    let n = sizes.bulk_lessons;
    let clients = 8;
    let started = Instant::now();
    let (_, last_names) =
        write_concurrently(&cluster.cities["lund"], ca, clients, n / clients).await?;
    let total = before + clients * (n / clients);
    wait_for_lessons(&cluster.cities["malmo"], ca, &last_names, total).await?;
    let took = started.elapsed();
    let raw_took = raw::written_and_synced(n);
    report.add(
        "bulk",
        format!("{n} lessons written at A until B has them (s)"),
        took.as_secs_f64(),
        "s",
        Some(raw_took.as_secs_f64()),
        "≤ 2 × raw",
        Some(took.as_secs_f64() <= 2.0 * raw_took.as_secs_f64()),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work = raw::costs(before + n / 2, if sizes.quick { 16 } else { 128 });
    report.add(
        "bulk",
        format!(
            "Automerge's work alone for those lessons (commit, two applies) on {cores} cores (s)"
        ),
        n as f64 / work.lessons_per_second_here(2),
        "s",
        Some(raw_took.as_secs_f64()),
        "the least any build could take here",
        None,
    );
    // A new city joins a federation that already holds them.
    cluster.add_city("ystad")?;
    let started = Instant::now();
    cluster.start_city("ystad").await?;
    wait_for_lessons(&cluster.cities["ystad"], ca, &last_names, total).await?;
    let took = started.elapsed();
    let doc = raw::document(total, "city-a");
    let raw_took = raw::to_empty_replica(&doc);
    report.add(
        "bulk",
        format!("bootstrap: new city until it lists all {total} lessons (s)"),
        took.as_secs_f64(),
        "s",
        Some(raw_took.as_secs_f64()),
        "≤ 2 × raw",
        Some(took.as_secs_f64() <= 2.0 * raw_took.as_secs_f64()),
    );
    Ok(())
}

/// Bytes on disk for the city's lesson document against Automerge's saved size (stops Lund).
async fn disk_footprint(
    cluster: &mut Cluster,
    held: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let lund = cluster.cities.get_mut("lund").context("lund")?;
    let text = cluster::scrape(lund.metrics.context("metrics")?).await?;
    let store_size = cluster::metric(&text, "sfs_storage_bytes").context("storage bytes metric")?;
    lund.stop()?;
    // The document's stored bytes against Automerge's own saved size of the very same document.
    let (stored, saved) = {
        let store = open_store(&lund.config.data_dir)?;
        let doc = ShareableDocId::lessons("lund")?;
        let saved = store
            .shared
            .load_one(&doc)?
            .context("lund's lessons are stored")?
            .save()
            .len() as f64;
        (store.shared.stored_bytes(&doc)? as f64, saved)
    };
    report.add(
        "footprint",
        format!("stored bytes of a {held}-lesson document (snapshot + chunks)"),
        stored,
        "bytes",
        Some(saved),
        "≤ 1.5 × Automerge's saved size",
        Some(stored <= 1.5 * saved),
    );
    report.add(
        "footprint",
        "the city's whole sled store on disk (bytes)",
        store_size,
        "bytes",
        Some(saved),
        "",
        None,
    );
    Ok(())
}

/// Every city sees the handbook's release named `label`; returns when each one got it.
fn watch_release(
    cities: &[EmulatedCity],
    label: &str,
) -> Vec<tokio::task::JoinHandle<Option<Instant>>> {
    cities
        .iter()
        .map(|city| {
            let sync = city.sync.clone();
            let mut changes = sync.subscribe_changes();
            let label = label.to_string();
            tokio::spawn(async move {
                let has = |sync: &sfs_node::federation::sync::SyncHandle| {
                    sync.read(|engine| {
                        engine.document(&method::method_doc()).is_some_and(|doc| {
                            method::releases(doc)
                                .iter()
                                .any(|r| r.version_label == label)
                        })
                    })
                };
                let deadline = tokio::time::Instant::now() + DEADLINE;
                loop {
                    match tokio::time::timeout_at(deadline, changes.recv()).await {
                        Err(_) => return None,
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                        Ok(_) => {
                            if has(&sync) {
                                return Some(Instant::now());
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// Waits until the hub's frame counters stop moving; returns them.
async fn hub_quiet(cluster: &Cluster) -> anyhow::Result<(u64, u64)> {
    let mut last = cluster.hub.frame_totals().await?;
    let mut still = 0;
    let deadline = Instant::now() + DEADLINE;
    while still < 3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cluster.hub.frame_totals().await?;
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if Instant::now() > deadline {
            bail!("the hub never went quiet");
        }
    }
    Ok(last)
}

async fn wait_none_linked(cities: &[EmulatedCity]) -> anyhow::Result<()> {
    wait_for("every city noticed the hub left", || async {
        cities.iter().all(|c| !c.linked()).then_some(())
    })
    .await
}

/// Opens a stopped node's store with its at-rest key (beside the data directory).
fn open_store(data_dir: &std::path::Path) -> anyhow::Result<sfs_node::storage::store::Store> {
    let key_file = sfs_node::node::config::default_key_file(data_dir, None);
    let (key, _) = sfs_node::storage::seal::MasterKey::for_data_dir(&key_file, data_dir)?;
    Ok(sfs_node::storage::store::Store::open(
        data_dir,
        Duration::from_secs(10),
        key,
    )?)
}

/// Stores `count` lesson documents of other cities (three lessons each) in a stopped node's
/// data directory, as if it had synced them.
fn store_documents(data_dir: &std::path::Path, count: usize, prefix: &str) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    for i in 0..count {
        // Written under the owner's own actor, as a real city would: the federation accepts a
        // city's changes under no other.
        let city = format!("{prefix}{i:04}");
        let actor = sfs_sync::run_actor(&sfs_sync::NodeId::city(&city)?, [0; 8]);
        let doc = raw::document_by(3, actor);
        store.shared.persist(&DocPersist {
            doc: ShareableDocId::lessons(&city)?,
            kind: PersistKind::Snapshot,
            bytes: doc.save(),
            heads: doc.get_heads(),
        })?;
    }
    Ok(())
}

/// One city link carrying many documents: the hub restarts, nothing changed.
async fn reconnect_many_documents(sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let docs = sizes.cities;
    let mut cluster = Cluster::with_hub()?;
    cluster.hub.stop()?;
    store_documents(&cluster.hub.config.data_dir, docs, "kommun")?;
    cluster.hub.start()?;
    let cities = cluster.emulated_cities(1).await?;
    wait_all_linked(&cities).await?;
    wait_for("the city holds every document", || async {
        let held = cities[0].sync.read(|e| {
            e.documents()
                .filter(|(_, doc)| !doc.get_heads().is_empty())
                .count()
        });
        (held >= docs).then_some(())
    })
    .await?;
    hub_quiet(&cluster).await?;
    cluster.hub.stop()?;
    wait_none_linked(&cities).await?;
    cluster.hub.start()?;
    wait_all_linked(&cities).await?;
    let (frames, bytes) = hub_quiet(&cluster).await?;
    let held = cities[0].sync.read(|e| e.documents().count());
    let (raw_messages, raw_bytes) = raw::reconnect_unchanged(held);
    report.add(
        "reconnect",
        format!("one city link, {held} unchanged documents: frames"),
        frames as f64,
        "frames",
        Some(raw_messages as f64),
        "constant, whatever the number of documents",
        Some(frames == 4),
    );
    report.add(
        "reconnect",
        format!("one city link, {held} unchanged documents: bytes"),
        bytes as f64,
        "bytes",
        Some(raw_bytes as f64),
        "< 1 KB",
        Some(bytes < 1024),
    );
    for city in cities {
        city.stop().await;
    }
    Ok(())
}

/// The scenarios with hundreds of cities: fan-out, reconnect, idle, hub memory, start-up.
/// Creates the ten chapters of the handbook the fan-out scenarios release.
async fn handbook_chapters(coordinator: &mut sfs_client::Client) -> anyhow::Result<()> {
    for i in 0..10 {
        coordinator
            .method
            .create_chapter(pb::CreateChapterRequest {
                chapter: Some(pb::Chapter {
                    title: format!("Chapter {}", i + 1),
                    ..Default::default()
                }),
            })
            .await?;
    }
    Ok(())
}

/// Keeps the emulated cities' clocks going (keepalives), once a second.
fn tick_every_second(cities: &[EmulatedCity]) -> tokio::task::JoinHandle<()> {
    let syncs: Vec<_> = cities.iter().map(|c| c.sync.clone()).collect();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            let syncs = syncs.clone();
            let _ = tokio::task::spawn_blocking(move || syncs.iter().for_each(|s| s.tick())).await;
        }
    })
}

/// Creates release `label` at the hub; returns when it was asked for.
async fn release(coordinator: &mut sfs_client::Client, label: &str) -> anyhow::Result<Instant> {
    let started = Instant::now();
    coordinator
        .method
        .create_release(pb::CreateReleaseRequest {
            release: Some(pb::Release {
                version_label: label.into(),
                notes: "The release every city must get".into(),
                ..Default::default()
            }),
        })
        .await?;
    Ok(started)
}

/// Releases a warm-up handbook release and waits until every city holds it and the hub is quiet.
async fn warm_up(
    cluster: &Cluster,
    coordinator: &mut sfs_client::Client,
    cities: &[EmulatedCity],
) -> anyhow::Result<()> {
    let warm = watch_release(cities, "warm-up");
    release(coordinator, "warm-up").await?;
    for task in warm {
        task.await?
            .context("a city never got the warm-up release")?;
    }
    hub_quiet(cluster).await?;
    Ok(())
}

/// What one handbook release to every city costs.
struct ReleaseTimes {
    /// Until the last city had the release frame in hand.
    received: Duration,
    /// Until the last city had applied and stored it.
    applied: Duration,
    /// The national hub's CPU time meanwhile.
    hub_cpu: Duration,
    /// Raw Automerge: the same change to as many replicas in step.
    raw: Duration,
}

/// Releases "2026.1" at the hub and times it until every city holds it.
async fn time_release(
    cluster: &Cluster,
    coordinator: &mut sfs_client::Client,
    cities: &[EmulatedCity],
) -> anyhow::Result<ReleaseTimes> {
    let watchers = watch_release(cities, "2026.1");
    for city in cities {
        city.arrivals.lock().unwrap().clear();
    }
    let hub_cpu = cluster.hub.cpu_time().context("hub cpu time")?;
    let started = release(coordinator, "2026.1").await?;
    let mut last = started;
    for task in watchers {
        last = last.max(task.await?.context("a city never got the release")?);
    }
    let hub_cpu = cluster.hub.cpu_time().context("hub cpu time")? - hub_cpu;
    let mut received = started;
    for city in cities {
        let first = city.arrivals.lock().unwrap().first().copied();
        received = received.max(first.context("a city received nothing")?);
    }
    let handbook = cities[0]
        .sync
        .read(|engine| engine.document(&method::method_doc()).cloned())
        .context("the cities hold the handbook")?;
    Ok(ReleaseTimes {
        received: received - started,
        applied: last - started,
        hub_cpu,
        raw: raw::fan_out(&handbook, cities.len()),
    })
}

/// Counties (issue 18), run with `--only counties` (and `fanout,propagation` beside it for the
/// flat figures of the same run): a lesson from a city under one county hub until a city under
/// another lists it — city → county → nation → county → city, every write fsynced at each of
/// the five nodes — and a handbook release until every emulated city, each under one of the
/// county hubs, holds it; both against raw Automerge over the same hops. Everything shares this
/// machine's two cores and one disk: the fan-out's "applied and stored" adds 21 county hub
/// processes' work to the 290 cities'.
async fn counties(sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let county_count = if sizes.quick { 2 } else { 21 };
    let n = sizes.cities;
    let mut cluster = Cluster::with_hub()?;
    let ca = cluster.ca_pem.clone();
    let mut coordinator = cluster.hub.coordinator(&ca).await?;
    handbook_chapters(&mut coordinator).await?;
    let ids = (0..n)
        .map(|i| sfs_sync::NodeId::city(&format!("kommun{i:03}")))
        .collect::<Result<Vec<_>, _>>()?;
    let county = |c: usize| format!("lan{c:02}");
    let serves = |c: usize| -> Vec<String> {
        let mut serves: Vec<String> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % county_count == c)
            .map(|(_, id)| id.name().to_string())
            .collect();
        match c {
            0 => serves.push("lund".into()),
            1 => serves.push("umea".into()),
            _ => {}
        }
        serves
    };
    // Propagation with the two county hubs on its path only: with all 21 on this one machine,
    // each would apply and fsync the lesson the national hub relays to it, on the same two
    // cores and disk, where a real deployment has a machine per county hub.
    for c in 0..2 {
        cluster.start_county(&county(c), serves(c)).await?;
    }
    cluster.add_city_under("lund", &county(0))?;
    cluster.add_city_under("umea", &county(1))?;
    cluster.start_city("lund").await?;
    cluster.start_city("umea").await?;
    let mut lund = cluster.cities["lund"].client(&ca).await?;
    let mut umea = cluster.cities["umea"].client(&ca).await?;
    let times = lessons_until_listed(&mut lund, &mut umea, sizes, 3_000_000).await?;
    let held = lessons_held(&cluster, "lund", "lund").await?;
    let mut chain = raw::Chain::new(held, 4);
    let mut raw_times: Vec<Duration> = (0..sizes.propagation_samples)
        .map(|_| chain.propagate_one())
        .collect();
    raw_times.sort();
    for (label, p) in [("median", 0.5), ("p99", 0.99)] {
        let value = ms(percentile(&times, p));
        let raw_value = ms(percentile(&raw_times, p));
        let median = label == "median";
        report.add(
            "counties",
            format!(
                "propagation {label}, city → county → nation → county → city, document of {held} lessons (ms)"
            ),
            value,
            "ms",
            Some(raw_value),
            if median { "≤ 2 × raw four hops" } else { "" },
            median.then_some(value <= 2.0 * raw_value),
        );
    }

    for c in 2..county_count {
        cluster.start_county(&county(c), serves(c)).await?;
    }
    eprintln!("{county_count} county hubs linked");
    let cities = cluster
        .emulated_cities_under(&ids, |i| county(i % county_count))
        .await?;
    let ticker = tick_every_second(&cities);
    let linked_in = wait_all_linked(&cities).await?;
    eprintln!("{n} cities linked to {county_count} county hubs in {linked_in:?}");
    warm_up(&cluster, &mut coordinator, &cities).await?;
    let ReleaseTimes {
        received,
        applied,
        hub_cpu,
        raw: raw_took,
    } = time_release(&cluster, &mut coordinator, &cities).await?;
    let through = format!("through {county_count} county hubs");
    report.add(
        "counties",
        format!("one handbook release until all {n} cities received it, {through} (ms)"),
        ms(received),
        "ms",
        Some(ms(raw_took)),
        "compare: fanout, flat",
        None,
    );
    report.add(
        "counties",
        format!("… until all {n} applied and stored it, {through} (ms)"),
        ms(applied),
        "ms",
        Some(ms(raw_took)),
        "",
        None,
    );
    report.add(
        "counties",
        format!("national hub CPU time for the release, {through} (ms)"),
        ms(hub_cpu),
        "ms",
        None,
        "compare: fanout, flat",
        None,
    );
    let county_rss: Vec<u64> = cluster
        .counties
        .values()
        .filter_map(cluster::NodeProcess::rss_bytes)
        .collect();
    let hub_rss = cluster.hub.rss_bytes().unwrap_or(0);
    report.add(
        "counties",
        format!("national hub memory (RSS), {county_count} county hubs linked (MiB)"),
        hub_rss as f64 / (1024.0 * 1024.0),
        "MiB",
        None,
        "",
        None,
    );
    report.add(
        "counties",
        format!(
            "largest county hub memory (RSS), about {} cities each (MiB)",
            n.div_ceil(county_count)
        ),
        county_rss.iter().copied().max().unwrap_or(0) as f64 / (1024.0 * 1024.0),
        "MiB",
        None,
        "",
        None,
    );
    ticker.abort();
    for city in cities {
        city.stop().await;
    }
    Ok(())
}

async fn national_scale(
    sizes: &Sizes,
    wanted: &dyn Fn(&str) -> bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut cluster = Cluster::with_hub()?;
    let ca = cluster.ca_pem.clone();
    let mut coordinator = cluster.hub.coordinator(&ca).await?;
    handbook_chapters(&mut coordinator).await?;
    let n = sizes.cities;
    let cities = cluster.emulated_cities(n).await?;
    let ticker = tick_every_second(&cities);
    let linked_in = wait_all_linked(&cities).await?;
    eprintln!("{n} cities linked in {linked_in:?}");
    warm_up(&cluster, &mut coordinator, &cities).await?;

    if wanted("fanout") {
        let ReleaseTimes {
            received,
            applied,
            hub_cpu,
            raw: raw_took,
        } = time_release(&cluster, &mut coordinator, &cities).await?;
        report.add(
            "fanout",
            format!("one handbook release until all {n} cities received it (ms)"),
            ms(received),
            "ms",
            Some(ms(raw_took)),
            "≤ 2 × raw",
            Some(received <= 2 * raw_took),
        );
        report.add(
            "fanout",
            format!("… until all {n} applied and stored it, on this one machine (ms)"),
            ms(applied),
            "ms",
            Some(ms(raw_took)),
            "≤ 2 × raw",
            Some(applied <= 2 * raw_took),
        );
        report.add(
            "fanout",
            "hub CPU time for the release (ms)",
            ms(hub_cpu),
            "ms",
            None,
            "",
            None,
        );
        // The disk's share: every city stores the release durably, all on this one disk.
        let threads = 16;
        let disk = crate::storage::durable_writes_to_files(n, threads)?;
        report.add(
            "fanout",
            format!("{n} durable writes of 600 bytes, a file each, {threads} threads (ms)"),
            ms(disk),
            "ms",
            Some(ms(raw_took)),
            "the least \"applied and stored\" could take on this disk",
            None,
        );
        hub_quiet(&cluster).await?;
    }

    let docs_per_link = cities[0].sync.read(|engine| engine.documents().count());
    if wanted("reconnect") {
        for changed in [false, true] {
            cluster.hub.stop()?;
            wait_none_linked(&cities).await?;
            if changed {
                let city = &cities[0];
                let doc = ShareableDocId::lessons(city.id.name())?;
                let (title, body, tags) = raw::lesson(7);
                city.sync
                    .edit(&doc, |tx| {
                        let new = sfs_node::domain::lessons::NewLesson {
                            title: &title,
                            body: &body,
                            tags: &tags,
                            method_step: "",
                        };
                        sfs_node::domain::lessons::create(tx, "while-away", &new, 0)
                    })
                    .map_err(|_| anyhow::anyhow!("editing a city's lessons failed"))?;
            }
            cluster.hub.start()?;
            let started = Instant::now();
            wait_all_linked(&cities).await?;
            let linked = started.elapsed();
            let (frames, bytes) = hub_quiet(&cluster).await?;
            let case = if changed {
                "one document changed"
            } else {
                "nothing changed"
            };
            let (raw_messages, raw_bytes) = raw::reconnect_unchanged(docs_per_link);
            report.add(
                "reconnect",
                format!("{case}: frames per city link ({docs_per_link} documents each)"),
                frames as f64 / n as f64,
                "frames",
                Some(raw_messages as f64),
                "constant, whatever the number of documents",
                Some(changed || frames as usize == 4 * n),
            );
            report.add(
                "reconnect",
                format!("{case}: bytes per city link"),
                bytes as f64 / n as f64,
                "bytes",
                Some(raw_bytes as f64),
                "< 1 KB with nothing changed",
                (!changed).then_some((bytes as f64 / n as f64) < 1024.0),
            );
            report.add(
                "reconnect",
                format!("{case}: all {n} cities linked after the hub restart (ms)"),
                ms(linked),
                "ms",
                None,
                "",
                None,
            );
            if changed {
                report.add(
                    "reconnect",
                    "one document changed: frames beyond the handshakes",
                    frames as f64 - 4.0 * n as f64,
                    "frames",
                    None,
                    "that document only: to the hub, then relayed to every other city",
                    Some(frames as usize <= 4 * n + 3 * n),
                );
            }
        }
    }

    if wanted("idle") {
        let (frames_before, bytes_before) = cluster.hub.frame_totals().await?;
        let cpu_before = cluster.hub.cpu_time().context("hub cpu time")?;
        let started = Instant::now();
        // The measurement window: nothing changes while it runs.
        tokio::time::sleep(sizes.idle).await;
        let (frames_after, bytes_after) = cluster.hub.frame_totals().await?;
        let cpu = cluster.hub.cpu_time().context("hub cpu time")? - cpu_before;
        let window = started.elapsed();
        let cpu_percent = 100.0 * cpu.as_secs_f64() / window.as_secs_f64();
        report.add(
            "idle",
            format!("hub CPU with {n} cities, nothing changing, {window:.0?} (%)"),
            cpu_percent,
            "%",
            None,
            "< 1 %",
            Some(cpu_percent < 1.0),
        );
        report.add(
            "idle",
            format!("hub frames in {window:.0?} (keepalives only)"),
            (frames_after - frames_before) as f64,
            "frames",
            None,
            "keepalives only",
            None,
        );
        report.add(
            "idle",
            format!("hub bytes in {window:.0?}"),
            (bytes_after - bytes_before) as f64,
            "bytes",
            None,
            "",
            None,
        );
    }

    if wanted("footprint") {
        let rss = cluster.hub.rss_bytes().context("hub memory")? as f64;
        report.add(
            "footprint",
            format!("hub memory (RSS) with {n} cities connected (MiB)"),
            rss / (1024.0 * 1024.0),
            "MiB",
            None,
            "≤ 64 MiB",
            Some(rss <= 64.0 * 1024.0 * 1024.0),
        );
    }
    ticker.abort();
    for city in cities {
        city.stop().await;
    }

    if wanted("footprint") {
        cluster.hub.stop()?;
        let docs = sizes.startup_docs;
        store_documents(&cluster.hub.config.data_dir, docs, "start")?;
        cluster.hub.start()?;
        let took = cluster.hub.start_time;
        report.add(
            "footprint",
            format!("hub start-up with {} documents (ms)", docs + 1),
            ms(took),
            "ms",
            None,
            "< 1 s",
            Some(took < Duration::from_secs(1)),
        );
    }
    drop(coordinator);
    Ok(())
}

/// The figures as a table (Markdown).
pub fn table(figures: &[Figure], sizes: &Sizes) -> String {
    let mut out = String::new();
    out += "| scenario | figure | stadforstad | raw Automerge | ratio | target | met |\n";
    out += "|---|---|---|---|---|---|---|\n";
    for f in figures {
        let num = |v: f64| {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            f.scenario,
            f.figure,
            num(f.value),
            f.raw.map(num).unwrap_or_default(),
            f.ratio.map(|r| format!("{r:.2}×")).unwrap_or_default(),
            f.target,
            match f.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            }
        );
    }
    if sizes.quick {
        out += "\n(quick mode: small numbers that prove the harness works; not the figures of record)\n";
    }
    out
}
