//! Writes the seed corpora (`seeds/<target>/`) from honest traffic of the fixture federation,
//! plus a few classic attacks, so the fuzzer starts from frames a real peer sends.
//!
//! Usage: `write_seeds <seeds directory>`.

use std::path::Path;

// Built by `cargo fuzz` with coverage instrumentation, so it links libFuzzer's runtime too.
extern crate libfuzzer_sys;

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;
use sfs_sync::{Frame, ShareableDocId};
use sfs_sync_fuzz::{
    build_doc, decode_wire, encode_wire, fixture, lund_id, Mode, Script, Step, MAX_FRAME_BYTES,
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
                doc: ShareableDocId::lessons("lund").expect("valid"),
                message: message_with_changes(&build_doc(&lund_id(), &["Night buses", "!"])),
            }));
            steps
        }),
        ("hub-forged-author", Mode::Hub, {
            let mut steps = honest[..2].to_vec();
            steps.push(Step::Frame(Frame::DocSync {
                doc: ShareableDocId::lessons("malmo").expect("valid"),
                message: message_with_changes(&build_doc(&lund_id(), &["Not malmo's"])),
            }));
            steps
        }),
    ];
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
