//! The .proto files are the API's contract. These checks run in the normal test suite:
//!
//! - **Documented**: every service, method, message, field, enum and enum value has a comment.
//! - **Compatible**: nothing in `v1` that was released (recorded in `v1.contract`) is removed,
//!   renumbered or retyped. Additions are fine; run the test with `SFS_UPDATE_CONTRACT=1` to
//!   record them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use prost_types::{DescriptorProto, FileDescriptorProto};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files() -> Vec<FileDescriptorProto> {
    let dir = root().join("stadforstad/v1");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".proto"))
        .map(|n| format!("stadforstad/v1/{n}"))
        .collect();
    names.sort();
    let mut compiler = protox::Compiler::new([root()]).unwrap();
    compiler.include_source_info(true);
    compiler.open_files(names).unwrap();
    compiler
        .file_descriptor_set()
        .file
        .into_iter()
        .filter(|f| f.name().starts_with("stadforstad/"))
        .collect()
}

/// Comment text at a source path, if any.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
    let info = file.source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments().trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn check_message(
    file: &FileDescriptorProto,
    message: &DescriptorProto,
    path: Vec<i32>,
    prefix: &str,
    missing: &mut Vec<String>,
) {
    let name = format!("{prefix}{}", message.name());
    if comment(file, &path).is_none() {
        missing.push(format!("message {name}"));
    }
    for (i, field) in message.field.iter().enumerate() {
        let mut p = path.clone();
        p.extend([2, i as i32]);
        if comment(file, &p).is_none() {
            missing.push(format!("field {name}.{}", field.name()));
        }
    }
    for (i, nested) in message.nested_type.iter().enumerate() {
        if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let mut p = path.clone();
        p.extend([3, i as i32]);
        check_message(file, nested, p, &format!("{name}."), missing);
    }
}

#[test]
fn every_part_of_the_contract_is_documented() {
    let mut missing = Vec::new();
    for file in files() {
        for (i, service) in file.service.iter().enumerate() {
            if comment(&file, &[6, i as i32]).is_none() {
                missing.push(format!("service {}", service.name()));
            }
            for (j, method) in service.method.iter().enumerate() {
                if comment(&file, &[6, i as i32, 2, j as i32]).is_none() {
                    missing.push(format!("method {}.{}", service.name(), method.name()));
                }
            }
        }
        for (i, message) in file.message_type.iter().enumerate() {
            check_message(&file, message, vec![4, i as i32], "", &mut missing);
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            if comment(&file, &[5, i as i32]).is_none() {
                missing.push(format!("enum {}", e.name()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} parts of the .proto files have no comment:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// One line per field and method: what clients depend on.
fn contract_lines() -> BTreeSet<String> {
    fn message_lines(message: &DescriptorProto, prefix: &str, lines: &mut BTreeSet<String>) {
        let name = format!("{prefix}{}", message.name());
        for field in &message.field {
            lines.insert(format!(
                "field {name} {} {} {:?} {:?} {}",
                field.number(),
                field.name(),
                field.r#type(),
                field.label(),
                field.type_name()
            ));
        }
        for nested in &message.nested_type {
            message_lines(nested, &format!("{name}."), lines);
        }
    }
    let mut lines = BTreeSet::new();
    for file in files() {
        for service in &file.service {
            for method in &service.method {
                lines.insert(format!(
                    "method {}.{} {} {} {} {}",
                    service.name(),
                    method.name(),
                    method.input_type(),
                    method.output_type(),
                    method.client_streaming(),
                    method.server_streaming()
                ));
            }
        }
        for message in &file.message_type {
            message_lines(message, "", &mut lines);
        }
    }
    lines
}

#[test]
fn nothing_released_in_v1_is_broken() {
    let path = root().join("v1.contract");
    let current = contract_lines();
    if std::env::var_os("SFS_UPDATE_CONTRACT").is_some() {
        let text: String = current.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let recorded: BTreeSet<String> = std::fs::read_to_string(&path)
        .expect("proto/v1.contract is missing: run SFS_UPDATE_CONTRACT=1 cargo test -p sfs-proto")
        .lines()
        .map(str::to_string)
        .collect();
    let broken: Vec<&String> = recorded.difference(&current).collect();
    assert!(
        broken.is_empty(),
        "breaking changes to v1 (removed, renumbered or retyped):\n{}",
        broken
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let added = current.difference(&recorded).count();
    assert_eq!(added, 0, "{added} additions to v1 are not recorded yet: run SFS_UPDATE_CONTRACT=1 cargo test -p sfs-proto");
}
