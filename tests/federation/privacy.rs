//! Promise 7 through the real API: the privacy guard judges what will be stored (also after a
//! merge of concurrent edits), and every string field that can reach a shared or national
//! document passes it.

use prost::bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use sfs_client::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::util::{eventually, Federation, TestNode};

/// The Tax Agency's example personal identity number (valid checksum), in a sentence.
const PERSONAL: &str = "Born 811218-9876 in Malmö";

async fn lesson_body(client: &mut sfs_client::Client, name: &str) -> Option<(String, String)> {
    let lesson = client
        .lessons
        .get_lesson(pb::GetLessonRequest { name: name.into() })
        .await
        .ok()?
        .into_inner();
    Some((lesson.body, lesson.etag))
}

async fn update_body_at(
    client: &mut sfs_client::Client,
    name: &str,
    body: &str,
    etag: &str,
) -> Result<pb::Lesson, Status> {
    client
        .lessons
        .update_lesson(pb::UpdateLessonRequest {
            lesson: Some(pb::Lesson {
                name: name.into(),
                body: body.into(),
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: vec!["body".into()],
        })
        .await
        .map(|r| r.into_inner())
}

/// Two edits at the same version, each harmless, that merge into personal data: the second is
/// refused, the stored text is the first edit's, and nothing of the refused edit reaches the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_that_merge_into_personal_data_are_refused() {
    let mut fed = Federation::start(&["lund"]).await;
    fed.wait_linked(0).await;
    let mut lund = fed.client(0).await;
    let mut hub = fed.hub_client().await;
    let org = lund
        .register
        .create_organisation(pb::CreateOrganisationRequest {
            organisation: Some(pb::Organisation {
                display_name: "Social services".into(),
                sector: "municipality".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    lund.create_contact(pb::Contact {
        full_name: "Anna Lindqvist".into(),
        organisation: org,
        ..Default::default()
    })
    .await
    .unwrap();

    // (starting body, first edit, second edit at the same version, what they merge into)
    let cases = [
        (
            "id 811218XY9876 end",
            "id 811218Y9876 end",
            "id 811218X9876 end",
            "a personal identity number",
        ),
        (
            "Thanks to AnnaY XLindqvist",
            "Thanks to Anna XLindqvist",
            "Thanks to AnnaY Lindqvist",
            "contact persons",
        ),
        (
            "call 07X0-12Y3 45 67 now",
            "call 07X0-123 45 67 now",
            "call 070-12Y3 45 67 now",
            "a phone number",
        ),
        (
            "mail anna atX example dotY se",
            "mail anna at example dotY se",
            "mail anna atX example dot se",
            "an e-mail address",
        ),
    ];
    for (start, first, second, kind) in cases {
        let lesson = lund.create_lesson("Merging", start, vec![]).await.unwrap();
        let etag = lesson.etag.clone();
        update_body_at(&mut lund, &lesson.name, first, &etag)
            .await
            .unwrap_or_else(|s| panic!("{first:?} alone is harmless: {s:?}"));
        let refused = update_body_at(&mut lund, &lesson.name, second, &etag)
            .await
            .expect_err("the merged body holds personal data");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("field `body`") && refused.message().contains(kind),
            "{refused:?}"
        );
        let (stored, _) = lesson_body(&mut lund, &lesson.name).await.unwrap();
        assert_eq!(stored, first, "the refused edit left nothing behind");

        // The city keeps working on the document, and the hub gets exactly what was stored.
        let (_, now) = lesson_body(&mut lund, &lesson.name).await.unwrap();
        let last = format!("{first} (reviewed)");
        update_body_at(&mut lund, &lesson.name, &last, &now)
            .await
            .unwrap();
        eventually("the hub has the last edit", || {
            let (mut hub, name, last) = (hub.clone(), lesson.name.clone(), last.clone());
            async move {
                let (body, _) = lesson_body(&mut hub, &name).await?;
                (body == last).then_some(())
            }
        })
        .await;
    }
    // Nothing of any refused edit reached the hub's documents.
    let hub_lessons = hub.list_lessons("cities/lund").await.unwrap();
    for lesson in hub_lessons {
        assert!(!lesson.body.contains("8112189876"), "{}", lesson.body);
        assert!(!lesson.body.contains("Anna Lindqvist"), "{}", lesson.body);
    }
    fed.stop_all().await;
}

/// Passes request and response bodies through as bytes, so one client can call every method
/// of the descriptor set.
#[derive(Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

struct RawClient {
    channel: Channel,
    token: String,
}

impl RawClient {
    async fn connect(fed: &Federation, node: &TestNode) -> RawClient {
        let addr = node.running.as_ref().unwrap().api_addr;
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&fed.ca_pem)))
            .unwrap()
            .connect()
            .await
            .unwrap();
        RawClient {
            channel,
            token: node.admin_token.clone(),
        }
    }

    async fn call(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(path.to_string()).unwrap();
        grpc.unary(request, path, Raw).await.map(|r| r.into_inner())
    }
}

/// Every path to a string field of `message` (through nested and repeated messages).
fn string_paths(
    message: &MessageDescriptor,
    prefix: &[FieldDescriptor],
    out: &mut Vec<Vec<FieldDescriptor>>,
) {
    for field in message.fields() {
        let mut path = prefix.to_vec();
        path.push(field.clone());
        match field.kind() {
            Kind::String => out.push(path),
            Kind::Message(nested) if !field.is_map() && prefix.len() < 4 => {
                string_paths(&nested, &path, out)
            }
            _ => {}
        }
    }
}

/// Sets the string at `path` (the first element of a repeated field) to `value`.
fn set_path(message: &mut DynamicMessage, path: &[FieldDescriptor], value: &str) {
    use prost_reflect::Value;
    let field = &path[0];
    if path.len() == 1 {
        let value = Value::String(value.to_string());
        let value = if field.is_list() {
            Value::List(vec![value])
        } else {
            value
        };
        message.set_field(field, value);
        return;
    }
    let Kind::Message(nested) = field.kind() else {
        unreachable!("only messages lead deeper")
    };
    if field.is_list() {
        let mut list = message
            .get_field(field)
            .as_list()
            .map(|l| l.to_vec())
            .unwrap_or_default();
        if list.is_empty() {
            list.push(Value::Message(DynamicMessage::new(nested)));
        }
        set_path(list[0].as_message_mut().unwrap(), &path[1..], value);
        message.set_field(field, Value::List(list));
    } else {
        let inner = message.get_field_mut(field);
        set_path(inner.as_message_mut().unwrap(), &path[1..], value);
    }
}

/// Where a write method runs, and a valid request for it (`n` makes names unique).
struct Write {
    method: &'static str,
    at_hub: bool,
    base: Box<dyn Fn(usize) -> Vec<u8>>,
    /// Fields the method stores as text: the guard itself must refuse them.
    stored: &'static [&'static str],
}

/// Methods that write no shared or national document (reads, and local documents).
const NOT_SHARED: &[&str] = &[
    "Lessons.GetLesson",
    "Lessons.ListLessons",
    "Register.CreateOrganisation",
    "Register.GetOrganisation",
    "Register.ListOrganisations",
    "Register.UpdateOrganisation",
    "Register.DeleteOrganisation",
    "Register.CreateGroup",
    "Register.GetGroup",
    "Register.ListGroups",
    "Register.UpdateGroup",
    "Register.DeleteGroup",
    "Register.CreateContact",
    "Register.GetContact",
    "Register.ListContacts",
    "Register.UpdateContact",
    "Register.DeleteContact",
    "Register.EraseContact",
    "Register.CreateMeeting",
    "Register.GetMeeting",
    "Register.ListMeetings",
    "Register.UpdateMeeting",
    "Register.DeleteMeeting",
    "Register.GetRoutine",
    "Register.UpdateRoutine",
    "Register.ListDenyWords",
    "Register.AddDenyWord",
    "Register.RemoveDenyWord",
    "Node.GetStatus",
    "Node.Backup",
    "Node.ListTokens",
    "Node.RevokeToken",
    "Signals.CreateSignal",
    "Signals.GetSignal",
    "Signals.ListSignals",
    "Signals.UpdateSignal",
    "Signals.EraseSignal",
    "Signals.ListAccessLog",
    "Method.GetHandbook",
    "Method.ListReleases",
    "Method.DiffHandbook",
    "Method.GetRunningRelease",
    "Method.ListStepNotes",
    "Method.SetStepNote",
    "Progress.ListProgress",
    "Progress.GetAdoption",
    "Directory.GetCity",
    "Directory.ListCities",
    "Statistics.CreateSupportRecord",
    "Statistics.ListSupportRecords",
    "Statistics.DeleteSupportRecord",
    "Statistics.CreateActivityRecord",
    "Statistics.ListActivityRecords",
    "Statistics.PreviewRelease",
    "Statistics.ListStatsReleases",
    "Statistics.GetDisclosurePolicy",
    "Statistics.GetNationalStats",
    "Statistics.ExportNationalStatsCsv",
];

/// Walks the API's descriptor set: for every method that writes a shared or national document,
/// every string field its request can carry is set to a personal identity number in turn. Each
/// such request is refused without repeating the number, or (for a field the method does not
/// keep) answered without it; a field the method stores as text is refused by the guard, with
/// `INVALID_ARGUMENT` naming the field and the kind of data. A method added to the API that is
/// in neither list fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_string_field_bound_for_a_shared_document_is_guarded() {
    let mut fed = Federation::start(&["lund"]).await;
    fed.wait_linked(0).await;
    let hub = RawClient::connect(&fed, &fed.hub).await;
    let city = RawClient::connect(&fed, &fed.cities[0]).await;
    let mut hub_client = fed.hub_client().await;
    let mut lund = fed.client(0).await;

    // What the requests refer to: a chapter, a step and an item at the hub, a lesson at Lund.
    let chapter = hub_client
        .method
        .create_chapter(pb::CreateChapterRequest {
            chapter: Some(pb::Chapter {
                title: "Start".into(),
                introduction: "How to start".into(),
                position: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    let step = hub_client
        .method
        .create_step(pb::CreateStepRequest {
            step: Some(pb::Step {
                chapter: chapter.clone(),
                title: "Map the hotels".into(),
                description: "Who runs which hotel".into(),
                position: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    let item = hub_client
        .method
        .create_checklist_item(pb::CreateChecklistItemRequest {
            item: Some(pb::ChecklistItem {
                step: step.clone(),
                text: "List the hotels".into(),
                position: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    hub_client
        .directory
        .create_city(pb::CreateCityRequest {
            city: Some(pb::City {
                name: "cities/lund".into(),
                display_name: "Lund".into(),
                county: "Skåne".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let lesson = lund
        .create_lesson("A lesson", "Plain text", vec!["tag".into()])
        .await
        .unwrap()
        .name;
    eventually("Lund has the step", || {
        let (mut lund, step) = (lund.clone(), step.clone());
        async move {
            let handbook = lund
                .method
                .get_handbook(pb::GetHandbookRequest::default())
                .await
                .ok()?
                .into_inner();
            handbook
                .chapters
                .iter()
                .flat_map(|c| &c.steps)
                .any(|s| s.name == step)
                .then_some(())
        }
    })
    .await;

    let writes: Vec<Write> = vec![
        Write {
            method: "Lessons.DeleteLesson",
            at_hub: false,
            base: Box::new(|_| {
                pb::DeleteLessonRequest {
                    name: "cities/lund/lessons/none".into(),
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
        Write {
            method: "Lessons.RedactLesson",
            at_hub: false,
            base: Box::new(|_| {
                pb::RedactLessonRequest {
                    name: "cities/lund/lessons/none".into(),
                    fields: vec!["body".into()],
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
        Write {
            method: "Method.RedactHandbook",
            at_hub: true,
            base: Box::new(|_| {
                pb::RedactHandbookRequest {
                    names: vec!["method/steps/none".into()],
                    fields: vec![],
                    text: String::new(),
                }
                .encode_to_vec()
            }),
            // It stores none of the request's strings: it only takes text out.
            stored: &[],
        },
        Write {
            method: "Lessons.CreateLesson",
            at_hub: false,
            base: Box::new(|_| {
                pb::CreateLessonRequest {
                    lesson: Some(pb::Lesson {
                        title: "A lesson".into(),
                        body: "Plain text".into(),
                        tags: vec!["tag".into()],
                        ..Default::default()
                    }),
                }
                .encode_to_vec()
            }),
            stored: &["title", "body", "tags"],
        },
        Write {
            method: "Lessons.UpdateLesson",
            at_hub: false,
            base: {
                let lesson = lesson.clone();
                Box::new(move |_| {
                    pb::UpdateLessonRequest {
                        lesson: Some(pb::Lesson {
                            name: lesson.clone(),
                            title: "A lesson".into(),
                            body: "Plain text, edited".into(),
                            tags: vec!["tag".into()],
                            ..Default::default()
                        }),
                        update_mask: vec![],
                    }
                    .encode_to_vec()
                })
            },
            stored: &["title", "body", "tags"],
        },
        Write {
            method: "Progress.SetStepProgress",
            at_hub: false,
            base: {
                let step = step.clone();
                Box::new(move |_| {
                    pb::SetStepProgressRequest {
                        progress: Some(pb::StepProgress {
                            step: step.clone(),
                            state: "started".into(),
                            date: "2025-01-15".into(),
                            note: "Going well".into(),
                            ..Default::default()
                        }),
                    }
                    .encode_to_vec()
                })
            },
            stored: &["note"],
        },
        Write {
            method: "Method.CreateChapter",
            at_hub: true,
            base: Box::new(|n| {
                pb::CreateChapterRequest {
                    chapter: Some(pb::Chapter {
                        title: format!("Chapter {n}"),
                        introduction: "Text".into(),
                        position: 2,
                        ..Default::default()
                    }),
                }
                .encode_to_vec()
            }),
            stored: &["title", "introduction"],
        },
        Write {
            method: "Method.UpdateChapter",
            at_hub: true,
            base: {
                let chapter = chapter.clone();
                Box::new(move |_| {
                    pb::UpdateChapterRequest {
                        chapter: Some(pb::Chapter {
                            name: chapter.clone(),
                            title: "Start".into(),
                            introduction: "How to start".into(),
                            position: 1,
                            ..Default::default()
                        }),
                        update_mask: vec![],
                    }
                    .encode_to_vec()
                })
            },
            stored: &["title", "introduction"],
        },
        Write {
            method: "Method.DeleteChapter",
            at_hub: true,
            base: Box::new(|_| {
                pb::DeleteRequest {
                    name: "method/chapters/none".into(),
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
        Write {
            method: "Method.CreateStep",
            at_hub: true,
            base: {
                let chapter = chapter.clone();
                Box::new(move |n| {
                    pb::CreateStepRequest {
                        step: Some(pb::Step {
                            chapter: chapter.clone(),
                            title: format!("Step {n}"),
                            description: "Text".into(),
                            position: 2,
                            ..Default::default()
                        }),
                    }
                    .encode_to_vec()
                })
            },
            stored: &["title", "description"],
        },
        Write {
            method: "Method.UpdateStep",
            at_hub: true,
            base: {
                let (chapter, step) = (chapter.clone(), step.clone());
                Box::new(move |_| {
                    pb::UpdateStepRequest {
                        step: Some(pb::Step {
                            name: step.clone(),
                            chapter: chapter.clone(),
                            title: "Map the hotels".into(),
                            description: "Who runs which hotel".into(),
                            position: 1,
                            ..Default::default()
                        }),
                        update_mask: vec![],
                    }
                    .encode_to_vec()
                })
            },
            stored: &["title", "description"],
        },
        Write {
            method: "Method.DeleteStep",
            at_hub: true,
            base: Box::new(|_| {
                pb::DeleteRequest {
                    name: "method/steps/none".into(),
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
        Write {
            method: "Method.CreateChecklistItem",
            at_hub: true,
            base: {
                let step = step.clone();
                Box::new(move |_| {
                    pb::CreateChecklistItemRequest {
                        item: Some(pb::ChecklistItem {
                            step: step.clone(),
                            text: "Check".into(),
                            position: 2,
                            ..Default::default()
                        }),
                    }
                    .encode_to_vec()
                })
            },
            stored: &["text"],
        },
        Write {
            method: "Method.UpdateChecklistItem",
            at_hub: true,
            base: {
                let (step, item) = (step.clone(), item.clone());
                Box::new(move |_| {
                    pb::UpdateChecklistItemRequest {
                        item: Some(pb::ChecklistItem {
                            name: item.clone(),
                            step: step.clone(),
                            text: "List the hotels".into(),
                            position: 1,
                        }),
                        update_mask: vec![],
                    }
                    .encode_to_vec()
                })
            },
            stored: &["text"],
        },
        Write {
            method: "Method.DeleteChecklistItem",
            at_hub: true,
            base: Box::new(|_| {
                pb::DeleteRequest {
                    name: "method/items/none".into(),
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
        Write {
            method: "Method.CreateRelease",
            at_hub: true,
            base: Box::new(|n| {
                pb::CreateReleaseRequest {
                    release: Some(pb::Release {
                        version_label: format!("2026.{n}"),
                        notes: "What changed".into(),
                        ..Default::default()
                    }),
                }
                .encode_to_vec()
            }),
            stored: &["version_label", "notes"],
        },
        Write {
            method: "Directory.CreateCity",
            at_hub: true,
            base: Box::new(|n| {
                pb::CreateCityRequest {
                    city: Some(pb::City {
                        name: format!("cities/extra{n}"),
                        display_name: "Extra".into(),
                        county: "Skåne".into(),
                        ..Default::default()
                    }),
                }
                .encode_to_vec()
            }),
            stored: &["display_name", "county"],
        },
        Write {
            method: "Directory.UpdateCity",
            at_hub: true,
            base: Box::new(|_| {
                pb::UpdateCityRequest {
                    city: Some(pb::City {
                        name: "cities/lund".into(),
                        display_name: "Lund".into(),
                        county: "Skåne".into(),
                        ..Default::default()
                    }),
                    update_mask: vec![],
                }
                .encode_to_vec()
            }),
            stored: &["display_name", "county"],
        },
        Write {
            method: "Directory.DeleteCity",
            at_hub: true,
            base: Box::new(|_| {
                pb::DeleteRequest {
                    name: "cities/none".into(),
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
        Write {
            method: "Statistics.PublishRelease",
            at_hub: false,
            base: Box::new(|_| {
                pb::PublishReleaseRequest {
                    quarter: "2025-Q1".into(),
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
        Write {
            method: "Statistics.UpdateDisclosurePolicy",
            at_hub: true,
            base: Box::new(|_| {
                pb::UpdateDisclosurePolicyRequest {
                    policy: Some(pb::DisclosurePolicy {
                        mode: "suppression".into(),
                        k: 5,
                        ..Default::default()
                    }),
                }
                .encode_to_vec()
            }),
            stored: &[],
        },
    ];

    let pool = DescriptorPool::decode(sfs_proto::FILE_DESCRIPTOR_SET).unwrap();
    // Every method of the API is accounted for.
    for service in pool.services() {
        if service.name() == "Federation" {
            continue;
        }
        for method in service.methods() {
            let name = format!("{}.{}", service.name(), method.name());
            assert!(
                NOT_SHARED.contains(&name.as_str()) || writes.iter().any(|w| w.method == name),
                "{name} is new: list it as a write to a shared document (and test it) or as not"
            );
        }
    }

    let mut n = 0;
    let mut guarded = 0;
    for write in &writes {
        let (service, method_name) = write.method.split_once('.').unwrap();
        let service = pool
            .get_service_by_name(&format!("stadforstad.v1.{service}"))
            .unwrap();
        let method = service.methods().find(|m| m.name() == method_name).unwrap();
        let path = format!("/{}/{}", service.full_name(), method.name());
        let client = if write.at_hub { &hub } else { &city };
        let mut paths = Vec::new();
        string_paths(&method.input(), &[], &mut paths);
        assert!(
            write
                .stored
                .iter()
                .all(|f| paths.iter().any(|p| p.last().unwrap().name() == *f)),
            "{}: a stored field is not in the request",
            write.method
        );
        for field_path in paths {
            n += 1;
            let shown: Vec<&str> = field_path.iter().map(|f| f.name()).collect();
            let shown = shown.join(".");
            let leaf = field_path.last().unwrap().name().to_string();
            let mut request =
                DynamicMessage::decode(method.input(), (write.base)(n).as_slice()).unwrap();
            set_path(&mut request, &field_path, PERSONAL);
            let answer = client.call(&path, request.encode_to_vec()).await;
            let stored = write.stored.contains(&leaf.as_str()) && field_path.len() <= 2;
            match answer {
                Err(status) => {
                    assert!(
                        !status.message().contains("9876"),
                        "{} {shown}: the error repeats the data: {status:?}",
                        write.method
                    );
                    if stored {
                        assert_eq!(
                            status.code(),
                            Code::InvalidArgument,
                            "{} {shown}: {status:?}",
                            write.method
                        );
                        assert!(
                            status.message().contains(&format!("field `{leaf}`"))
                                && status.message().contains("a personal identity number"),
                            "{} {shown}: the guard names the field and the kind: {status:?}",
                            write.method
                        );
                        guarded += 1;
                    }
                }
                Ok(response) => {
                    assert!(
                        !stored,
                        "{} {shown}: personal data was stored",
                        write.method
                    );
                    assert!(
                        !String::from_utf8_lossy(&response).contains("9876"),
                        "{} {shown}: accepted and kept",
                        write.method
                    );
                }
            }
        }
    }
    println!("{n} string fields of write requests tried; {guarded} refused by the guard");
    assert!(guarded >= 20, "{guarded}");

    // The example, plainly.
    let refused = hub_client
        .directory
        .update_city(pb::UpdateCityRequest {
            city: Some(pb::City {
                name: "cities/lund".into(),
                display_name: "Born 811218-9876 in Malmö".into(),
                county: "Skåne".into(),
                ..Default::default()
            }),
            update_mask: vec!["display_name".into()],
        })
        .await
        .expect_err("a personal identity number in a city's display name");
    assert_eq!(refused.code(), Code::InvalidArgument);

    // Errors made by code that quotes the value it refuses are cleaned at the API's edge: the
    // statistics service quotes a bad quarter; the message keeps the field, not the data.
    let refused = lund
        .stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: PERSONAL.into(),
        })
        .await
        .expect_err("not a quarter");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("field `quarter`") && !refused.message().contains("9876"),
        "{refused:?}"
    );
    // No error repeats a long value in full.
    let long = "x".repeat(100_000);
    let refused = lund
        .lessons
        .get_lesson(pb::GetLessonRequest { name: long })
        .await
        .expect_err("not a lesson name");
    assert!(
        refused.message().chars().count() <= 500,
        "{}",
        refused.message().len()
    );
    fed.stop_all().await;
}

/// The stall: with many contacts, a request with hundreds of tags cost seconds of
/// guard work on the async workers. Counts are checked first now, and the names are one
/// automaton built once per register version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_contacts_and_many_tags_cost_no_stall() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut lund = fed.client(0).await;
    let org = lund
        .register
        .create_organisation(pb::CreateOrganisationRequest {
            organisation: Some(pb::Organisation {
                display_name: "Hotels".into(),
                sector: "business".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    for i in 0..135 {
        lund.create_contact(pb::Contact {
            full_name: format!("Person{i} Surname{i}"),
            organisation: org.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let tags = |n: usize| {
        (0..n)
            .map(|i| format!("tag number {i}"))
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    let refused = lund
        .lessons
        .create_lesson(pb::CreateLessonRequest {
            lesson: Some(pb::Lesson {
                title: "Many tags".into(),
                body: "x".repeat(900),
                tags: tags(5000),
                ..Default::default()
            }),
        })
        .await
        .expect_err("too many tags");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("field `tags`"), "{refused:?}");
    let lesson = lund
        .lessons
        .create_lesson(pb::CreateLessonRequest {
            lesson: Some(pb::Lesson {
                title: "Twenty tags".into(),
                body: "Ordinary text about the hotel group. ".repeat(100),
                tags: tags(20),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lesson.tags.len(), 20);
    let took = started.elapsed();
    // Was 35.8 s for 300 tags; generous for a loaded test machine.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // A contact added a moment ago is known to the guard at once (the automaton is rebuilt
    // with the register).
    lund.create_contact(pb::Contact {
        full_name: "Newly Added".into(),
        organisation: org,
        ..Default::default()
    })
    .await
    .unwrap();
    let refused = lund
        .create_lesson("Thanks", "Thanks to newly added for the help", vec![])
        .await
        .expect_err("the new contact's name");
    assert!(
        format!("{refused:?}").contains("contact persons"),
        "{refused:?}"
    );
    fed.stop_all().await;
}
