//! Writes the seed corpora (`seeds/<target>/`) from honest traffic of the fixture federation,
//! plus a few classic attacks, so the fuzzer starts from frames a real peer sends.
//!
//! Usage: `write_seeds <seeds directory>`.

use std::path::Path;

// Built by `cargo fuzz` with coverage instrumentation, so it links libFuzzer's runtime too.
extern crate libfuzzer_sys;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::Automerge;
use sfs_sync::{Frame, ShareableDocId};
use sfs_sync_fuzz::{
    build_doc, decode_wire, encode_wire, fixture, lund_id, raw_sync_message, text_change_message,
    Fixture, Mode, Script, Step, MAX_FRAME_BYTES,
};

/// An Automerge sync message that carries the changes of `doc`, as sent to a peer that has none.
fn message_with_changes(doc: &Automerge) -> Vec<u8> {
    let (mut ours, mut theirs) = (sync::State::new(), sync::State::new());
    let mut empty = Automerge::new();
    for _ in 0..4 {
        let message = doc.generate_sync_message(&mut ours).expect("a message");
        if !message.changes.is_empty() {
            return message.encode();
        }
        empty
            .receive_sync_message(&mut theirs, message)
            .expect("receives");
        if let Some(reply) = empty.generate_sync_message(&mut theirs) {
            let mut doc = doc.clone();
            doc.receive_sync_message(&mut ours, reply)
                .expect("receives");
        }
    }
    panic!("no message with changes");
}

/// The hashes of the changes the hub holds of `doc`.
fn hub_hashes(fx: &Fixture, doc: &str) -> Vec<automerge::ChangeHash> {
    let id = ShareableDocId::parse(doc).expect("valid");
    let (_, bytes) = fx.hub_docs.iter().find(|(d, _)| *d == id).expect("held");
    let doc = Automerge::load(bytes).expect("loads");
    doc.get_changes(&[]).iter().map(|c| c.hash()).collect()
}

/// A protobuf frame as bytes, for shapes the engine's frame type cannot hold.
fn pb_bytes(frame: sfs_proto::v1::Frame) -> Vec<u8> {
    prost::Message::encode_to_vec(&frame)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the seed directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .expect("usage: write_seeds <seeds directory>");
    let root = Path::new(&root);
    let fx = fixture();

    assert!(
        decode_wire(&vec![0; MAX_FRAME_BYTES + 1]).is_err(),
        "a frame over the limit is refused"
    );

    // frame_decode: every honest frame as it crosses the wire, and the two small kinds.
    let dir = root.join("frame_decode");
    let mut frames: Vec<Frame> = fx.honest_from_malmo.clone();
    frames.extend(fx.honest_from_hub.iter().cloned());
    frames.push(Frame::SummaryRequest);
    frames.push(Frame::Goodbye {
        code: 7,
        message: "refused".into(),
    });
    let mut written = Vec::new();
    for frame in frames {
        let bytes = encode_wire(frame.clone());
        if !written.contains(&bytes) {
            write(
                &dir,
                &format!("{:02}-{}", written.len(), frame.kind()),
                &bytes,
            );
            written.push(bytes);
        }
    }

    // receive_path: honest reconnects in both directions, as values and as wire bytes.
    let dir = root.join("receive_path");
    let honest: Vec<Step> = fx
        .honest_from_malmo
        .iter()
        .cloned()
        .map(Step::Frame)
        .collect();
    let seeds = [
        ("hub-honest", Mode::Hub, honest.clone()),
        (
            "hub-honest-wire",
            Mode::Hub,
            fx.honest_from_malmo
                .iter()
                .map(|f| Step::Wire(encode_wire(f.clone())))
                .collect(),
        ),
        (
            "city-honest",
            Mode::City,
            fx.honest_from_hub
                .iter()
                .cloned()
                .map(Step::Frame)
                .collect(),
        ),
        ("hub-reconnect", Mode::Hub, {
            let mut steps = honest.clone();
            steps.push(Step::Reconnect);
            steps.extend(honest.iter().cloned());
            steps
        }),
        ("hub-timeout", Mode::Hub, {
            let mut steps = honest[..2].to_vec();
            steps.push(Step::Tick(20_000));
            steps.push(Step::Frame(Frame::SummaryRequest));
            steps.push(Step::Tick(70_000));
            steps
        }),
        // A change to another city's document, and a change to malmo's own document under
        // another city's actor: both must be refused.
        ("hub-other-owner", Mode::Hub, {
            let mut steps = honest[..2].to_vec();
            steps.push(Step::Frame(Frame::DocSync {
                generation: 0,
                doc: ShareableDocId::lessons("lund").expect("valid"),
                message: message_with_changes(&build_doc(&lund_id(), &["Night buses", "!"])),
            }));
            steps
        }),
        ("hub-forged-author", Mode::Hub, {
            let mut steps = honest[..2].to_vec();
            steps.push(Step::Frame(Frame::DocSync {
                generation: 0,
                doc: ShareableDocId::lessons("malmo").expect("valid"),
                message: message_with_changes(&build_doc(&lund_id(), &["Not malmo's"])),
            }));
            steps
        }),
    ];
    // Hostile peers, round two (issue 16): each attack as a seed.
    let method = ShareableDocId::parse("national/method").expect("valid");
    let malmo_lessons = ShareableDocId::lessons("malmo").expect("valid");
    let x = hub_hashes(fx, "national/method")[0];
    let (lo, hi) = {
        let mut h = hub_hashes(fx, "shared/lessons/malmo");
        h.sort();
        (h[0], h[h.len() - 1])
    };
    let after_handshake = |extra: Vec<Step>| {
        let mut steps = honest[..2].to_vec();
        steps.extend(extra);
        steps
    };
    let doc_sync = |doc: &ShareableDocId, message: Vec<u8>| {
        Step::Frame(Frame::DocSync {
            generation: 0,
            doc: doc.clone(),
            message,
        })
    };
    // malmo's newer change, which the hub lacks: a valid change to carry beside an attack.
    let malmo_change = {
        let doc = build_doc(
            &sfs_sync::NodeId::city("malmo").expect("valid"),
            &["Hotel staff training", " works"],
        );
        doc.get_changes(&[])
            .last()
            .expect("a change")
            .raw_bytes()
            .to_vec()
    };
    let mut corrupt = malmo_change.clone();
    let at = corrupt.len() - 3;
    corrupt[at] ^= 0x5a;
    let huge_id = pb_bytes(sfs_proto::v1::Frame {
        body: Some(sfs_proto::v1::frame::Body::DocSync(
            sfs_proto::v1::DocSync {
                doc_id: format!("shared/lessons/{}", "x".repeat(60_000)),
                message: Vec::new(),
                generation: 0,
            },
        )),
    });
    // Generations (redaction): a whole newer generation of malmo's lessons carrying its
    // generation marker, one claiming a generation it does not carry, and a message of an older
    // generation, each as protobuf so that the fuzzer mutates the generation numbers too.
    let generation_sync = |generation: u64, doc: &Automerge| {
        pb_bytes(sfs_proto::v1::Frame {
            body: Some(sfs_proto::v1::frame::Body::DocSync(
                sfs_proto::v1::DocSync {
                    doc_id: "shared/lessons/malmo".into(),
                    message: message_with_changes(doc),
                    generation,
                },
            )),
        })
    };
    let marked = {
        let mut doc = Automerge::new().with_actor(sfs_sync::run_actor(&sfs_sync_fuzz::malmo_id(), [2; 8]));
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, sfs_sync::GENERATION_KEY, 1u64)
            .expect("put");
        tx.put(automerge::ROOT, "title", "kept").expect("put");
        tx.commit();
        doc
    };
    let new_generation = generation_sync(1, &marked);
    let unmarked_generation = generation_sync(3, &build_doc(&sfs_sync_fuzz::malmo_id(), &["no marker"]));
    let stale_generation = generation_sync(0, &build_doc(&sfs_sync_fuzz::malmo_id(), &["old"]));
    let huge_summary = pb_bytes(sfs_proto::v1::Frame {
        body: Some(sfs_proto::v1::frame::Body::Summary(
            sfs_proto::v1::HeadsSummary {
                docs: vec![sfs_proto::v1::DocHeads::default(); 12_000],
                only_changed: false,
                digest: vec![0; 32],
            },
        )),
    });
    let reset = raw_sync_message(&[], &[], &[vec![]], &[], Some(0x05));
    let round_two = [
        (
            "hub-repeated-need",
            after_handshake(vec![doc_sync(
                &method,
                raw_sync_message(&[], &[x, x], &[], &[], Some(0x05)),
            )]),
        ),
        (
            "hub-repeated-need-with-change",
            after_handshake(vec![doc_sync(
                &malmo_lessons,
                raw_sync_message(&[], &[lo, lo], &[], &[malmo_change.clone()], None),
            )]),
        ),
        (
            "hub-unsorted-heads-and-needs",
            after_handshake(vec![
                doc_sync(
                    &malmo_lessons,
                    raw_sync_message(&[hi, lo], &[], &[], &[], None),
                ),
                Step::Reconnect,
                doc_sync(
                    &malmo_lessons,
                    raw_sync_message(&[], &[hi, lo], &[], &[], None),
                ),
            ]),
        ),
        (
            "hub-two-haves",
            after_handshake(vec![doc_sync(
                &method,
                raw_sync_message(&[], &[], &[vec![], vec![x]], &[], None),
            )]),
        ),
        (
            "hub-duplicate-change",
            after_handshake(vec![doc_sync(
                &malmo_lessons,
                raw_sync_message(&[], &[], &[], &[malmo_change.clone(), malmo_change], None),
            )]),
        ),
        (
            "hub-corrupt-own-change",
            after_handshake(vec![doc_sync(
                &malmo_lessons,
                raw_sync_message(&[], &[], &[], &[corrupt], None),
            )]),
        ),
        (
            "hub-goodbye-then-more",
            after_handshake(vec![
                Step::Frame(Frame::Goodbye {
                    code: 0,
                    message: "bye".into(),
                }),
                Step::Frame(Frame::Keepalive),
                Step::Tick(70_000),
            ]),
        ),
        (
            "hub-text-bomb",
            after_handshake(vec![doc_sync(
                &malmo_lessons,
                text_change_message(fx, &malmo_lessons, 5_000),
            )]),
        ),
        (
            "hub-reset-storm",
            after_handshake((0..8).map(|_| doc_sync(&method, reset.clone())).collect()),
        ),
        ("hub-huge-id", after_handshake(vec![Step::Wire(huge_id)])),
        (
            "hub-new-generation",
            after_handshake(vec![
                Step::Wire(new_generation),
                Step::Wire(stale_generation),
            ]),
        ),
        (
            "hub-unmarked-generation",
            after_handshake(vec![Step::Wire(unmarked_generation)]),
        ),
        (
            "hub-huge-summary",
            vec![honest[0].clone(), Step::Wire(huge_summary)],
        ),
    ];
    let seeds = seeds.into_iter().chain(
        round_two
            .into_iter()
            .map(|(name, steps)| (name, Mode::Hub, steps)),
    );
    let mut total = 0;
    for (name, mode, steps) in seeds {
        let bytes = Script { mode, steps }.encode(fx);
        total += bytes.len();
        write(&dir, name, &bytes);
    }
    println!(
        "wrote {} frame_decode seeds and receive_path seeds of {total} bytes under {}",
        written.len(),
        root.display()
    );
}
