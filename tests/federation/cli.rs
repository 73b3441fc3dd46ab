//! The `sfs` command line (run in-process with its real argument parsing) against a running
//! federation: certificate warnings, the hub's view of each city's link, and exports.

use serde_json::Value;
use sfs_node::api::tokens::{self, ApiRole};
use sfs_sync::NodeId;

use crate::util::{eventually, Federation, TestNode};

/// Runs `sfs` with `args` against `node` with `token`; the output, or the one-line error.
pub(crate) async fn sfs_as(
    fed: &Federation,
    node: &TestNode,
    token: &str,
    args: &[&str],
) -> Result<String, String> {
    let api = format!("https://{}", node.running.as_ref().unwrap().api_addr);
    let ca = fed.pki_dir().join("ca.crt").display().to_string();
    let mut argv: Vec<String> = ["sfs", "--endpoint", &api, "--token", token, "--ca", &ca]
        .iter()
        .map(|a| a.to_string())
        .collect();
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    match sfs_client::cli::run(argv, &mut out).await {
        Ok(()) => Ok(String::from_utf8(out).unwrap()),
        Err(err) => Err(err.one_line()),
    }
}

/// Runs `sfs` with `args` against `node` with its admin token; its output and its warnings.
async fn sfs_warned(fed: &Federation, node: &TestNode, args: &[&str]) -> (String, String) {
    let api = format!("https://{}", node.running.as_ref().unwrap().api_addr);
    let ca = fed.pki_dir().join("ca.crt").display().to_string();
    let mut argv: Vec<String> = [
        "sfs",
        "--endpoint",
        &api,
        "--token",
        &node.admin_token,
        "--ca",
        &ca,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    argv.extend(args.iter().map(|a| a.to_string()));
    let (mut out, mut warn) = (Vec::new(), Vec::new());
    sfs_client::cli::run_with_warnings(argv, &mut out, &mut warn)
        .await
        .unwrap_or_else(|err| panic!("sfs {args:?}: {}", err.one_line()));
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(warn).unwrap(),
    )
}

/// Runs `sfs` with `args` against `node` with its admin token; panics on failure.
pub(crate) async fn sfs(fed: &Federation, node: &TestNode, args: &[&str]) -> String {
    sfs_as(fed, node, &node.admin_token, args)
        .await
        .unwrap_or_else(|err| panic!("sfs {args:?}: {err}"))
}

/// The row of a `cities list` table that starts with `id`.
pub(crate) fn row<'a>(table: &'a str, id: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_warns_of_expiring_certificates_and_the_hub_shows_each_citys_link() {
    // The test federation's certificates are issued for 30 days: within the warning window.
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let status = sfs(&fed, &fed.cities[0], &["status"]).await;
    assert!(
        status.contains(
            "WARNING: this node's certificate expires in 29 days: issue a new one \
             (`sfs-node pki issue`) and restart the node before then"
        ),
        "{status}"
    );
    for (id, name) in [("lund", "Lund"), ("malmo", "Malmö")] {
        sfs(
            &fed,
            &fed.hub,
            &[
                "cities",
                "add",
                "--id",
                id,
                "--display-name",
                name,
                "--county",
                "Skåne län",
            ],
        )
        .await;
    }
    let status = sfs(&fed, &fed.hub, &["status"]).await;
    for id in ["lund", "malmo"] {
        assert!(
            status.contains(&format!("WARNING: {id}'s certificate expires in 29 days")),
            "{status}"
        );
    }
    let list = sfs(&fed, &fed.hub, &["cities", "list"]).await;
    assert!(row(&list, "lund").contains(" connected "), "{list}");

    // An id with letters an id cannot hold is refused with what to write instead; a typo of a
    // linked city is added, with a warning.
    let refused = sfs_as(
        &fed,
        &fed.hub,
        &fed.hub.admin_token,
        &[
            "cities",
            "add",
            "--id",
            "göteborg",
            "--display-name",
            "Göteborg",
            "--county",
            "Västra Götalands län",
        ],
    )
    .await
    .unwrap_err();
    assert!(
        refused.contains("use \"goteborg\" as the id and \"Göteborg\" as the display name"),
        "{refused}"
    );
    let (added, warning) = sfs_warned(
        &fed,
        &fed.hub,
        &[
            "cities",
            "add",
            "--id",
            "lnud",
            "--display-name",
            "Lund",
            "--county",
            "Skåne län",
        ],
    )
    .await;
    assert_eq!(added, "cities/lnud\n");
    assert!(
        warning.starts_with("warning: no city lnud has linked to this hub since it started")
            && warning.contains("Did you mean lund?"),
        "{warning}"
    );
    let (_, silent) = sfs_warned(
        &fed,
        &fed.hub,
        &[
            "cities",
            "add",
            "--id",
            "goteborg",
            "--display-name",
            "Göteborg",
            "--county",
            "Västra Götalands län",
        ],
    )
    .await;
    assert!(
        silent.starts_with("warning: no city goteborg") && !silent.contains("Did you mean"),
        "{silent}"
    );
    let list = sfs(&fed, &fed.hub, &["cities", "list"]).await;
    assert!(row(&list, "goteborg").contains(" Göteborg "), "{list}");
    assert!(row(&list, "lnud").contains(" never seen "), "{list}");

    // Malmö goes away; Lund's certificate is revoked.
    fed.stop_city(1).await;
    sfs_node::federation::pki::revoke(&fed.pki_dir(), &NodeId::city("lund").unwrap()).unwrap();
    let list = eventually("the hub shows lund revoked and malmo disconnected", || {
        let fed = &fed;
        async move {
            let list = sfs(fed, &fed.hub, &["cities", "list"]).await;
            (row(&list, "lund").contains(" revoked ")
                && row(&list, "malmo").contains(" disconnected "))
            .then_some(list)
        }
    })
    .await;
    let malmo = row(&list, "malmo");
    let today = malmo.split_whitespace().nth(4).unwrap().to_string();
    assert!(
        malmo.matches(today.as_str()).count() >= 2,
        "joined and last seen today, as dates: {list}"
    );
    let json: Value =
        serde_json::from_str(&sfs(&fed, &fed.hub, &["cities", "list", "--json"]).await).unwrap();
    let city = |id: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == format!("cities/{id}"))
            .unwrap()
            .clone()
    };
    assert_eq!(city("lund")["revoked"], true);
    assert!(city("malmo")["last_seen_ms"].as_i64().unwrap() > 0);
    assert!(
        city("malmo")["certificate_expire_time_ms"]
            .as_i64()
            .unwrap()
            > 0
    );
    let status = sfs(&fed, &fed.hub, &["status"]).await;
    assert!(
        status.contains("WARNING: lund's certificate is revoked"),
        "{status}"
    );
    fed.stop_all().await;
}

fn parse_csv_header(csv: &str) -> Vec<&str> {
    csv.lines().next().unwrap().trim_end().split(',').collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_hold_lessons_register_progress_and_statistics_and_the_register_stays_home() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let (lund, malmo, hub) = (&fed.cities[0], &fed.cities[1], &fed.hub);

    // Lund: a lesson whose text needs quoting, a register, progress and a published release.
    let body = "Say \"yes\", then call.\nAlways.";
    let lesson = sfs(
        &fed,
        lund,
        &[
            "lessons",
            "add",
            "--title",
            "=1+1 hotels",
            "--body",
            body,
            "--tag",
            "hotels",
            "--tag",
            "night",
        ],
    )
    .await;
    let lesson = lesson.trim().to_string();
    let org = sfs(
        &fed,
        lund,
        &[
            "register",
            "add-organisation",
            "--name",
            "Polisen, Lund",
            "--sector",
            "police",
        ],
    )
    .await;
    let org = org.trim().to_string();
    sfs(
        &fed,
        lund,
        &[
            "register",
            "add-contact",
            "--name",
            "Kontakt Lundgren",
            "--organisation",
            &org,
        ],
    )
    .await;
    let chapter = sfs(&fed, hub, &["handbook", "add-chapter", "--title", "Start"]).await;
    let step = sfs(
        &fed,
        hub,
        &[
            "handbook",
            "add-step",
            "--chapter",
            chapter.trim(),
            "--title",
            "Form a core group",
        ],
    )
    .await;
    let step = step.trim().to_string();
    eventually("the step reaches lund", || {
        let (fed, step) = (&fed, step.clone());
        async move {
            let shown = sfs_as(
                fed,
                lund,
                &lund.admin_token,
                &["handbook", "show", "--latest"],
            )
            .await
            .ok()?;
            shown.contains(&step).then_some(())
        }
    })
    .await;
    sfs(
        &fed,
        lund,
        &[
            "progress",
            "set",
            "--step",
            &step,
            "--state",
            "done",
            "--date",
            "2026-01-15",
        ],
    )
    .await;
    sfs(
        &fed,
        lund,
        &[
            "stats",
            "record",
            "activity",
            "--quarter",
            "2026-Q1",
            "--kind",
            "trainings_held",
            "--count",
            "3",
        ],
    )
    .await;
    sfs(&fed, lund, &["stats", "preview", "--quarter", "2026-Q1"]).await;
    sfs(&fed, lund, &["stats", "publish", "--quarter", "2026-Q1"]).await;

    // Lessons: CSV quotes and defuses, JSON keeps the values.
    let csv = sfs(&fed, lund, &["export", "lessons"]).await;
    assert_eq!(
        parse_csv_header(&csv),
        [
            "name",
            "city",
            "title",
            "body",
            "tags",
            "method_step",
            "method_step_title",
            "archived",
            "created",
            "updated"
        ]
    );
    assert!(
        csv.contains(&format!(
            "{lesson},lund,'=1+1 hotels,\"Say \"\"yes\"\", then call.\nAlways.\",hotels;night,,,false,"
        )),
        "{csv}"
    );
    let json: Value =
        serde_json::from_str(&sfs(&fed, lund, &["export", "lessons", "--format", "json"]).await)
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["title"], "=1+1 hotels");
    assert_eq!(json[0]["body"], body);
    assert_eq!(json[0]["tags"], "hotels;night");

    // The register: Lund's own, with names beside ids, for every role that may read it; never
    // at Malmö or the hub.
    let reader = tokens::create_token(&lund.config.data_dir, ApiRole::Reader, "export").unwrap();
    let contacts = sfs_as(
        &fed,
        lund,
        &reader,
        &["export", "register", "--table", "contacts"],
    )
    .await
    .unwrap();
    assert!(
        contacts.contains(&format!("Kontakt Lundgren,,{org},\"Polisen, Lund\",,")),
        "{contacts}"
    );
    let all = sfs(&fed, lund, &["export", "register", "--format", "json"]).await;
    let all: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["organisations"][0]["display_name"], "Polisen, Lund");
    assert_eq!(all["contacts"].as_array().unwrap().len(), 1);
    let theirs = sfs(&fed, malmo, &["export", "register", "--format", "json"]).await;
    assert!(
        !theirs.contains("Lundgren") && !theirs.contains("Polisen"),
        "{theirs}"
    );
    let at_hub = sfs_as(
        &fed,
        hub,
        &hub.admin_token,
        &["export", "register", "--format", "json"],
    )
    .await
    .unwrap_err();
    assert!(
        at_hub.contains("the hub keeps no local network register"),
        "{at_hub}"
    );
    let refused = sfs_as(&fed, lund, &lund.admin_token, &["export", "register"])
        .await
        .unwrap_err();
    assert!(
        refused.starts_with("CSV holds one table: give --table"),
        "{refused}"
    );

    // Progress and published statistics reach the hub, and export there for every city in the
    // directory.
    sfs(
        &fed,
        hub,
        &[
            "cities",
            "add",
            "--id",
            "lund",
            "--display-name",
            "Lund",
            "--county",
            "Skåne län",
        ],
    )
    .await;
    let progress = eventually("lund's progress exported at the hub", || {
        let fed = &fed;
        async move {
            let csv = sfs(fed, &fed.hub, &["export", "progress", "--all-cities"]).await;
            csv.contains("lund,").then_some(csv)
        }
    })
    .await;
    assert!(
        progress.contains(&format!("lund,{step},Form a core group,done,2026-01-15,")),
        "{progress}"
    );
    let stats = eventually("lund's release exported at the hub", || {
        let fed = &fed;
        async move {
            let json = sfs(
                fed,
                &fed.hub,
                &["export", "stats", "--all-cities", "--format", "json"],
            )
            .await;
            let rows: Value = serde_json::from_str(&json).unwrap();
            (!rows.as_array().unwrap().is_empty()).then_some(rows)
        }
    })
    .await;
    let activity = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["table"] == "activity" && r["row"] == "trainings_held")
        .unwrap();
    assert_eq!(activity["city"], "lund");
    assert_eq!(activity["quarter"], "2026-Q1");
    assert_eq!(activity["row"], "trainings_held");
    assert_eq!(activity["value"], 3);
    fed.stop_all().await;
}
