//! The city's register, signals, lessons, the national handbook, progress and the directory,
//! through the real API of real nodes.

use sfs_client::v1 as pb;
use sfs_client::Client;
use sfs_node::api::tokens::ApiRole;
use tonic::Code;

use crate::util::{all_files, contains, eventually, Federation};

fn code_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the call should fail");
    (status.code(), status.message().to_string())
}

fn list() -> pb::ListRequest {
    pb::ListRequest {
        page_size: 0,
        page_token: String::new(),
    }
}

async fn add_org(client: &mut Client, name: &str, sector: &str) -> String {
    client.create_organisation(name, sector).await.unwrap().name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_register_works_end_to_end_with_roles_validation_and_pages() {
    let mut fed = Federation::start(&["helsingborg"]).await;
    let mut editor = fed.client_with_role(0, ApiRole::Editor).await;
    let mut reader = fed.client_with_role(0, ApiRole::Reader).await;

    // Organisations: create, read, update, paginate.
    let police = add_org(&mut editor, "Police", "police").await;
    let social = add_org(&mut editor, "Social services", "municipality").await;
    for i in 0..5 {
        add_org(&mut editor, &format!("Hotel {i}"), "business").await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = reader
            .register
            .list_organisations(pb::ListRequest {
                page_size: 3,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.organisations.len() <= 3);
        assert_eq!(page.total_size, 7);
        seen.extend(page.organisations.into_iter().map(|o| o.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7, "every organisation once across pages");
    let updated = editor
        .register
        .update_organisation(pb::UpdateOrganisationRequest {
            organisation: Some(pb::Organisation {
                name: police.clone(),
                display_name: "Police region south".into(),
                sector: "ignored".into(),
            }),
            update_mask: vec!["display_name".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Police region south");
    assert_eq!(updated.sector, "police", "fields outside the mask are kept");

    // Groups, contacts, meetings and the routine refer to organisations that must exist.
    let group = editor
        .register
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                display_name: "Core group".into(),
                organisations: vec![police.clone(), social.clone()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.organisations.len(), 2);
    let contact = editor
        .create_contact(pb::Contact {
            full_name: "Case worker on duty".into(),
            organisation: social.clone(),
            email: "duty@example.org".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let meeting = editor
        .register
        .create_meeting(pb::CreateMeetingRequest {
            meeting: Some(pb::Meeting {
                date: "2026-10-01".into(),
                organisations: vec![police.clone(), social.clone()],
                agenda: "Routine".into(),
                decisions: vec!["Meet monthly".into()],
                follow_ups: vec![pb::FollowUp {
                    action: "Send the minutes".into(),
                    owner: contact.name.clone(),
                    due_date: "2026-10-08".into(),
                    done: false,
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reader
            .register
            .get_meeting(pb::GetRequest {
                name: meeting.name.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .follow_ups
            .len(),
        1
    );
    let routine = editor
        .register
        .update_routine(pb::UpdateRoutineRequest {
            routine: Some(pb::Routine {
                name: "routine".into(),
                steps: vec![
                    pb::RoutineStep {
                        description: "Police learns of a case and calls the mobile team".into(),
                        organisation: police.clone(),
                        how_to_reach: "112".into(),
                    },
                    pb::RoutineStep {
                        description: "The mobile team offers support".into(),
                        organisation: social.clone(),
                        how_to_reach: "On-call number".into(),
                    },
                ],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(routine.steps[0].organisation, police);
    let read_back = reader
        .register
        .get_routine(pb::GetRoutineRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read_back.steps.len(), 2);
    assert_eq!(
        read_back.steps[1].description,
        "The mobile team offers support"
    );

    // Validation names the field, and nothing is stored.
    let (code, message) = code_of(
        editor
            .register
            .create_organisation(pb::CreateOrganisationRequest {
                organisation: Some(pb::Organisation {
                    display_name: "X".into(),
                    sector: "bakery".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `sector`"), "{message}");
    let (code, message) = code_of(
        editor
            .register
            .create_meeting(pb::CreateMeetingRequest {
                meeting: Some(pb::Meeting {
                    date: "1 October".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `date`"), "{message}");
    let (code, message) = code_of(
        editor
            .register
            .create_contact(pb::CreateContactRequest {
                contact: Some(pb::Contact {
                    full_name: "N".into(),
                    organisation: "organisations/none".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `organisation`"), "{message}");
    assert_eq!(reader.list_organisations().await.unwrap().len(), 7);
    assert_eq!(reader.list_contacts().await.unwrap().len(), 1);

    // An organisation in use cannot be deleted; once free, it can.
    let (code, _) = code_of(
        editor
            .register
            .delete_organisation(pb::DeleteRequest {
                name: police.clone(),
            })
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    editor
        .register
        .delete_meeting(pb::DeleteRequest {
            name: meeting.name.clone(),
        })
        .await
        .unwrap();
    let (code, _) = code_of(
        reader
            .register
            .get_meeting(pb::GetRequest { name: meeting.name })
            .await,
    );
    assert_eq!(code, Code::NotFound);

    // Roles: a reader reads but does not write.
    let (code, _) = code_of(
        reader
            .register
            .create_organisation(pb::CreateOrganisationRequest {
                organisation: Some(pb::Organisation {
                    display_name: "X".into(),
                    sector: "other".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let (code, _) = code_of(
        reader
            .register
            .delete_group(pb::DeleteRequest { name: group.name })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    // The hub has no register.
    let mut hub = fed.hub_client().await;
    let (code, _) = code_of(hub.register.list_organisations(list()).await);
    assert_eq!(code, Code::FailedPrecondition);
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signals_are_for_coordinators_every_access_is_logged_and_nothing_leaves_the_city() {
    let mut fed = Federation::start(&["helsingborg", "malmo"]).await;
    let mut editor = fed.client_with_role(0, ApiRole::Editor).await;
    let mut coordinator = fed.client_with_role(0, ApiRole::Coordinator).await;
    let mut admin = fed.client(0).await;
    let org = add_org(&mut editor, "Hotel at the station", "business").await;
    let canary = "SIGNAL-CANARY-e41f09";

    let signal = pb::Signal {
        date: "2026-11-01".into(),
        reporting_organisation: org.clone(),
        kind: "signal".into(),
        description: format!("Receptionist saw {canary}"),
        ..Default::default()
    };
    let (code, _) = code_of(
        editor
            .signals
            .create_signal(pb::CreateSignalRequest {
                signal: Some(signal.clone()),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::PermissionDenied,
        "editors do not handle signals"
    );
    let created = coordinator
        .signals
        .create_signal(pb::CreateSignalRequest {
            signal: Some(signal.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.status, "new");

    // Bad input names the field and stores nothing.
    let future = pb::Signal {
        date: "2999-01-01".into(),
        ..signal.clone()
    };
    let (code, message) = code_of(
        coordinator
            .signals
            .create_signal(pb::CreateSignalRequest {
                signal: Some(future),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("field `date`") && message.contains("future"),
        "{message}"
    );
    let bad_kind = pb::Signal {
        kind: "rumour".into(),
        ..signal.clone()
    };
    let (code, message) = code_of(
        coordinator
            .signals
            .create_signal(pb::CreateSignalRequest {
                signal: Some(bad_kind),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `kind`"), "{message}");

    let got = coordinator
        .signals
        .get_signal(pb::GetRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.description.contains(canary));
    let listed = coordinator
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.signals.len(),
        1,
        "the refused signals were not stored"
    );
    let updated = coordinator
        .signals
        .update_signal(pb::UpdateSignalRequest {
            signal: Some(pb::Signal {
                name: created.name.clone(),
                status: "referred".into(),
                ..Default::default()
            }),
            update_mask: vec!["status".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.status, "referred");
    assert!(
        updated.description.contains(canary),
        "fields outside the mask are kept"
    );

    // The access log: admin only, and it holds every read and change.
    let (code, _) = code_of(coordinator.signals.list_access_log(list()).await);
    assert_eq!(code, Code::PermissionDenied);
    let log = admin
        .signals
        .list_access_log(list())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.resource.as_str()))
        .collect();
    for action in ["create", "read", "list", "update"] {
        assert!(
            actions.contains(&(action, created.name.as_str())),
            "{action} missing from {actions:?}"
        );
    }
    assert!(
        log.iter().all(|e| e.actor.contains("coordinator")),
        "{log:?}"
    );

    // Lessons still travel, so the link was busy while the signal existed.
    coordinator
        .create_lesson("Marker lesson", "shared", vec![])
        .await
        .unwrap();
    let malmo = fed.client(1).await;
    eventually("the marker lesson reaches Malmö", || {
        let mut malmo = malmo.clone();
        async move {
            let lessons = malmo.list_lessons("cities/helsingborg").await.ok()?;
            lessons
                .iter()
                .any(|l| l.title == "Marker lesson")
                .then_some(())
        }
    })
    .await;
    let frames = fed.hub_tap.lock().unwrap().clone();
    let own = fed.cities[0].config.data_dir.clone();
    let others = [
        fed.hub.config.data_dir.clone(),
        fed.cities[1].config.data_dir.clone(),
    ];
    fed.stop_all().await;
    assert!(
        contains(&crate::util::readable_with_key(&own), canary),
        "control: the signal is stored in Helsingborg"
    );
    assert!(
        all_files(&own).iter().all(|(_, b)| !contains(b, canary)),
        "the signal is stored sealed"
    );
    assert!(
        frames.iter().all(|(_, f)| !contains(f, canary)),
        "the signal crossed the wire"
    );
    for dir in others {
        for (path, bytes) in all_files(&dir) {
            assert!(
                !contains(&bytes, canary),
                "signal found in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_editors_changing_one_lesson_at_once_both_keep_their_edits() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let mut first = fed.client_with_role(0, ApiRole::Editor).await;
    let mut second = fed.client_with_role(0, ApiRole::Editor).await;
    let lesson = first
        .create_lesson("Shared draft", "Alpha beta gamma.", vec![])
        .await
        .unwrap();
    // Both read the same version, then both write at once.
    let seen_by_first = first.get_lesson(&lesson.name).await.unwrap();
    let seen_by_second = second.get_lesson(&lesson.name).await.unwrap();
    let edit = |client: &mut Client, base: &pb::Lesson, body: &str| {
        let mut client = client.clone();
        let lesson = pb::Lesson {
            body: body.to_string(),
            ..base.clone()
        };
        async move { client.update_lesson(lesson, vec!["body".into()]).await }
    };
    let (a, b) = tokio::join!(
        edit(&mut first, &seen_by_first, "Alpha ONE beta gamma."),
        edit(&mut second, &seen_by_second, "Alpha beta gamma TWO.")
    );
    a.unwrap();
    b.unwrap();
    let merged = first.get_lesson(&lesson.name).await.unwrap();
    assert_eq!(merged.body, "Alpha ONE beta gamma TWO.");
    // The merged text is what Malmö sees too.
    let malmo = fed.client(1).await;
    eventually("Malmö has the merged body", || {
        let mut malmo = malmo.clone();
        let name = lesson.name.clone();
        async move {
            (malmo.get_lesson(&name).await.ok()?.body == "Alpha ONE beta gamma TWO.").then_some(())
        }
    })
    .await;
    // An etag that is not a version of this document is refused.
    let bogus = pb::Lesson {
        etag: "00".repeat(32),
        body: "x".into(),
        ..merged.clone()
    };
    let err = first
        .update_lesson(bogus, vec!["body".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("field `lesson.etag`"), "{err}");
    fed.stop_all().await;
}

async fn step_names(client: &mut Client) -> Vec<String> {
    client
        .handbook()
        .await
        .unwrap()
        .chapters
        .iter()
        .flat_map(|c| c.steps.iter().map(|s| s.name.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_handbook_is_written_at_the_hub_released_and_diffed_from_history_in_every_city() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let mut coordinator = fed.hub_client_with_role(ApiRole::Coordinator).await;
    let mut hub_editor = fed.hub_client_with_role(ApiRole::Editor).await;
    let chapter = coordinator
        .method
        .create_chapter(pb::CreateChapterRequest {
            chapter: Some(pb::Chapter {
                title: "Build the network".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (code, _) = code_of(
        hub_editor
            .method
            .create_chapter(pb::CreateChapterRequest {
                chapter: Some(pb::Chapter {
                    title: "No".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::PermissionDenied,
        "editors do not write the handbook"
    );
    let step = coordinator
        .method
        .create_step(pb::CreateStepRequest {
            step: Some(pb::Step {
                chapter: chapter.name.clone(),
                title: "Map the actors".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (code, message) = code_of(
        coordinator
            .method
            .create_step(pb::CreateStepRequest {
                step: Some(pb::Step {
                    chapter: "method/chapters/none".into(),
                    title: "Orphan".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `chapter`"), "{message}");
    let item = coordinator
        .method
        .create_checklist_item(pb::CreateChecklistItemRequest {
            item: Some(pb::ChecklistItem {
                step: step.name.clone(),
                text: "List the authorities".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let release = coordinator
        .method
        .create_release(pb::CreateReleaseRequest {
            release: Some(pb::Release {
                version_label: "2026.1".into(),
                notes: "First".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (code, _) = code_of(
        coordinator
            .method
            .create_release(pb::CreateReleaseRequest {
                release: Some(pb::Release {
                    version_label: "2026.1".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::AlreadyExists);

    // After the release: one step added, one item changed, one item removed.
    let second_step = coordinator
        .method
        .create_step(pb::CreateStepRequest {
            step: Some(pb::Step {
                chapter: chapter.name.clone(),
                title: "Form a core group".into(),
                position: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    coordinator
        .method
        .update_step(pb::UpdateStepRequest {
            step: Some(pb::Step {
                name: step.name.clone(),
                title: "Map every actor".into(),
                ..Default::default()
            }),
            update_mask: vec!["title".into()],
        })
        .await
        .unwrap();
    coordinator
        .method
        .delete_checklist_item(pb::DeleteRequest {
            name: item.name.clone(),
        })
        .await
        .unwrap();

    // A city cannot write the handbook.
    let mut lund = fed.client(0).await;
    let (code, message) = code_of(
        lund.method
            .create_chapter(pb::CreateChapterRequest {
                chapter: Some(pb::Chapter {
                    title: "Mine".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{message}");

    // The release and the later changes reach the city.
    eventually("Lund has every change the hub made", || {
        let mut lund = lund.clone();
        async move {
            let handbook = lund.handbook().await.ok()?;
            let steps: Vec<&pb::Step> = handbook
                .chapters
                .iter()
                .flat_map(|c| c.steps.iter())
                .collect();
            let done = steps.len() == 2
                && steps
                    .iter()
                    .any(|s| s.title == "Map every actor" && s.checklist.is_empty());
            done.then_some(())
        }
    })
    .await;
    let handbook = lund.handbook().await.unwrap();
    assert_eq!(handbook.current_release, "2026.1");
    let releases = lund
        .method
        .list_releases(list())
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].name, release.name);

    // "What changed since 2026.1", answered from the document's history at the city.
    let diff = lund.handbook_changes_since_release("2026.1").await.unwrap();
    let mut changes: Vec<(String, String, Vec<String>)> = diff
        .changes
        .iter()
        .map(|c| (c.kind.clone(), c.resource.clone(), c.fields.clone()))
        .collect();
    changes.sort();
    let mut expected = vec![
        ("added".to_string(), second_step.name.clone(), vec![]),
        (
            "changed".to_string(),
            step.name.clone(),
            vec!["title".to_string()],
        ),
        ("removed".to_string(), item.name.clone(), vec![]),
    ];
    expected.sort();
    assert_eq!(changes, expected);
    // "Since I last looked": nothing changed since the version just read...
    let since = lund
        .handbook_changes_since_version(&handbook.version)
        .await
        .unwrap();
    assert!(since.changes.is_empty(), "{:?}", since.changes);
    // ...until the hub changes something.
    coordinator
        .method
        .update_chapter(pb::UpdateChapterRequest {
            chapter: Some(pb::Chapter {
                name: chapter.name.clone(),
                introduction: "Start here.".into(),
                ..Default::default()
            }),
            update_mask: vec!["introduction".into()],
        })
        .await
        .unwrap();
    let version = handbook.version.clone();
    let diff = eventually("Lund sees the new introduction", || {
        let mut lund = lund.clone();
        let version = version.clone();
        async move {
            let diff = lund.handbook_changes_since_version(&version).await.ok()?;
            (!diff.changes.is_empty()).then_some(diff)
        }
    })
    .await;
    assert_eq!(diff.changes.len(), 1);
    assert_eq!(diff.changes[0].resource, chapter.name);
    assert_eq!(diff.changes[0].fields, vec!["introduction".to_string()]);
    let (code, message) = code_of(
        lund.method
            .diff_handbook(pb::DiffHandbookRequest {
                since: Some(pb::diff_handbook_request::Since::SinceRelease(
                    "1999.9".into(),
                )),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "{message}");
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lessons_link_to_steps_archive_and_filter_and_progress_shows_adoption() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let mut hub = fed.hub_client().await;
    let chapter = hub
        .method
        .create_chapter(pb::CreateChapterRequest {
            chapter: Some(pb::Chapter {
                title: "Businesses".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let step = hub
        .method
        .create_step(pb::CreateStepRequest {
            step: Some(pb::Step {
                chapter: chapter.name.clone(),
                title: "Train hotel staff".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    hub.method
        .create_release(pb::CreateReleaseRequest {
            release: Some(pb::Release {
                version_label: "2026.2".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    for city in ["lund", "malmo"] {
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{city}"),
                    display_name: city.to_uppercase(),
                    county: "Skåne län".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let (code, message) = code_of(
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: "cities/lund".into(),
                    display_name: "Lund".into(),
                    county: "Skåne".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::AlreadyExists, "{message}");
    let mut lund = fed.client(0).await;
    let mut malmo = fed.client(1).await;
    eventually("Lund has the step", || {
        let mut lund = lund.clone();
        async move { (step_names(&mut lund).await.len() == 1).then_some(()) }
    })
    .await;

    // Lessons: linked to a step, tagged, archived; the feed filters.
    let linked = lund
        .create_lesson_from(pb::Lesson {
            title: "Night shift training".into(),
            body: "Cleaning staff saw most.".into(),
            tags: vec!["hotels".into()],
            method_step: step.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (code, message) = code_of(
        lund.lessons
            .create_lesson(pb::CreateLessonRequest {
                lesson: Some(pb::Lesson {
                    title: "Bad link".into(),
                    method_step: "method/steps/none".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `method_step`"), "{message}");
    let other = lund
        .create_lesson(
            "Outreach at night",
            "Go where people are.",
            vec!["outreach".into()],
        )
        .await
        .unwrap();
    lund.update_lesson(
        pb::Lesson {
            name: other.name.clone(),
            archived: true,
            ..Default::default()
        },
        vec!["archived".into()],
    )
    .await
    .unwrap();
    let feed = |client: &mut Client, request: pb::ListLessonsRequest| {
        let mut client = client.clone();
        async move {
            client
                .lessons
                .list_lessons(request)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let everything = pb::ListLessonsRequest {
        parent: "cities/-".into(),
        ..Default::default()
    };
    eventually("Malmö has both lessons, one of them archived", || {
        let request = pb::ListLessonsRequest {
            show_archived: true,
            ..everything.clone()
        };
        let malmo = malmo.clone();
        let other = other.clone();
        async move {
            let mut malmo = malmo;
            let page = malmo.lessons.list_lessons(request).await.ok()?.into_inner();
            (page.lessons.len() == 2
                && page
                    .lessons
                    .iter()
                    .any(|l| l.name == other.name && l.archived))
            .then_some(())
        }
    })
    .await;
    let page = feed(&mut malmo, everything.clone()).await;
    assert_eq!(
        page.lessons
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>(),
        vec![linked.name.clone()],
        "archived lessons are left out"
    );
    let page = feed(
        &mut malmo,
        pb::ListLessonsRequest {
            show_archived: true,
            ..everything.clone()
        },
    )
    .await;
    assert_eq!(page.total_size, 2);
    let page = feed(
        &mut malmo,
        pb::ListLessonsRequest {
            method_step: step.name.clone(),
            ..everything.clone()
        },
    )
    .await;
    assert_eq!(page.lessons.len(), 1);
    let page = feed(
        &mut malmo,
        pb::ListLessonsRequest {
            tag: "outreach".into(),
            show_archived: true,
            ..everything.clone()
        },
    )
    .await;
    assert_eq!(page.lessons[0].name, other.name);
    let page = feed(
        &mut malmo,
        pb::ListLessonsRequest {
            query: "CLEANING".into(),
            ..everything.clone()
        },
    )
    .await;
    assert_eq!(
        page.lessons.len(),
        1,
        "text search is case-insensitive and covers the body"
    );
    let page = feed(
        &mut malmo,
        pb::ListLessonsRequest {
            parent: "cities/malmo".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(page.lessons.is_empty());

    // Progress: coordinators mark steps; every node shows adoption.
    let mut lund_editor = fed.client_with_role(0, ApiRole::Editor).await;
    let done = pb::StepProgress {
        step: step.name.clone(),
        state: "done".into(),
        date: "2026-11-01".into(),
        note: "All hotels trained".into(),
        ..Default::default()
    };
    let (code, _) = code_of(
        lund_editor
            .progress
            .set_step_progress(pb::SetStepProgressRequest {
                progress: Some(done.clone()),
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let (code, message) = code_of(
        lund.progress
            .set_step_progress(pb::SetStepProgressRequest {
                progress: Some(pb::StepProgress {
                    state: "finished".into(),
                    ..done.clone()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `state`"), "{message}");
    lund.progress
        .set_step_progress(pb::SetStepProgressRequest {
            progress: Some(done.clone()),
        })
        .await
        .unwrap();
    let adoption = eventually("the hub sees Lund's progress", || {
        let mut hub = hub.clone();
        async move {
            let adoption = hub
                .progress
                .get_adoption(pb::GetAdoptionRequest {})
                .await
                .ok()?
                .into_inner();
            (!adoption.steps.first()?.cities.is_empty()).then_some(adoption)
        }
    })
    .await;
    let first = &adoption.steps[0];
    assert_eq!(first.step, step.name);
    assert_eq!(first.cities.len(), 1);
    assert_eq!(
        (
            first.cities[0].city.as_str(),
            first.cities[0].state.as_str()
        ),
        ("lund", "done")
    );
    assert_eq!(first.not_started, vec!["malmo".to_string()]);
    eventually("Malmö lists Lund's progress", || {
        let mut malmo = malmo.clone();
        async move {
            let list = malmo
                .progress
                .list_progress(pb::ListProgressRequest {
                    parent: "cities/lund".into(),
                })
                .await
                .ok()?
                .into_inner();
            (list.progress.len() == 1 && list.progress[0].note == "All hotels trained")
                .then_some(())
        }
    })
    .await;

    // The directory: every city's release as the hub knows it, readable in the cities.
    let cities = eventually("the hub knows each city has release 2026.2", || {
        let mut hub = hub.clone();
        async move {
            let cities = hub
                .directory
                .list_cities(list())
                .await
                .ok()?
                .into_inner()
                .cities;
            cities
                .iter()
                .all(|c| c.connected && c.handbook_release == "2026.2")
                .then_some(cities)
        }
    })
    .await;
    assert_eq!(cities.len(), 2);
    assert!(cities.iter().all(|c| !c.joined_date.is_empty()));
    let (code, _) = code_of(
        lund.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: "cities/x".into(),
                    display_name: "X".into(),
                    county: "Y".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::FailedPrecondition,
        "a city cannot edit the directory"
    );
    eventually("Lund reads the directory", || {
        let mut lund = lund.clone();
        async move {
            (lund
                .directory
                .list_cities(list())
                .await
                .ok()?
                .into_inner()
                .cities
                .len()
                == 2)
                .then_some(())
        }
    })
    .await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn personal_data_is_refused_before_it_reaches_a_shared_document() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut lund = fed.client(0).await;
    let mut editor = fed.client_with_role(0, ApiRole::Editor).await;
    let org = add_org(&mut lund, "Social services", "municipality").await;
    lund.create_contact(pb::Contact {
        full_name: "Karin Söderberg".into(),
        organisation: org,
        ..Default::default()
    })
    .await
    .unwrap();
    let (code, _) = code_of(
        editor
            .register
            .add_deny_word(pb::DenyWordRequest {
                word: "Hotell Solgården".into(),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::PermissionDenied,
        "only admins keep the deny list"
    );
    lund.register
        .add_deny_word(pb::DenyWordRequest {
            word: "Hotell Solgården".into(),
        })
        .await
        .unwrap();

    let cases = [
        (
            "title",
            pb::Lesson {
                title: "Thanks to Karin Söderberg".into(),
                ..Default::default()
            },
            "contact persons",
        ),
        (
            "body",
            pb::Lesson {
                title: "Call us".into(),
                body: "Ring 070-123 45 67 any time".into(),
                ..Default::default()
            },
            "phone number",
        ),
        (
            "body",
            pb::Lesson {
                title: "A case".into(),
                body: "The girl, 811218-9876, was".into(),
                ..Default::default()
            },
            "personal identity number",
        ),
        (
            "body",
            pb::Lesson {
                title: "A hotel".into(),
                body: "It started at hotell solgården last spring".into(),
                ..Default::default()
            },
            "deny list",
        ),
        (
            "tags",
            pb::Lesson {
                title: "Tagged".into(),
                tags: vec!["karin söderberg".into()],
                ..Default::default()
            },
            "contact persons",
        ),
    ];
    for (field, lesson, kind) in cases {
        let (code, message) = code_of(
            editor
                .lessons
                .create_lesson(pb::CreateLessonRequest {
                    lesson: Some(lesson),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(
            message.contains(&format!("field `{field}`")) && message.contains(kind),
            "{message}"
        );
        assert!(
            !message.contains("070")
                && !message.contains("9876")
                && !message.to_lowercase().contains("söderberg"),
            "the data is not echoed: {message}"
        );
    }
    // Updates are checked too; the lesson keeps its old text.
    let lesson = editor
        .create_lesson("Clean lesson", "Nothing personal here.", vec![])
        .await
        .unwrap();
    let err = editor
        .update_lesson(
            pb::Lesson {
                name: lesson.name.clone(),
                body: "Mail karin@example.se".into(),
                ..Default::default()
            },
            vec!["body".into()],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("e-mail address"), "{err}");
    assert_eq!(
        editor.get_lesson(&lesson.name).await.unwrap().body,
        "Nothing personal here."
    );
    assert_eq!(
        editor.list_lessons("cities/lund").await.unwrap().len(),
        1,
        "nothing refused was stored"
    );
    let words = lund
        .register
        .list_deny_words(pb::ListDenyWordsRequest {})
        .await
        .unwrap()
        .into_inner()
        .words;
    assert_eq!(words, vec!["Hotell Solgården".to_string()]);
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_citys_step_notes_are_set_listed_checked_and_kept_to_the_city() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let step = fed.hub_step(0, "Map the hotels").await;
    let mut editor = fed.client_with_role(0, ApiRole::Editor).await;
    let mut reader = fed.client_with_role(0, ApiRole::Reader).await;
    let note = |step: &str, text: &str| pb::SetStepNoteRequest {
        note: Some(pb::StepNote {
            step: step.into(),
            text: text.into(),
            ..Default::default()
        }),
    };

    // An editor sets the note and changes it; a reader lists it.
    let set = editor
        .method
        .set_step_note(note(&step, "Start with the camp sites"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.step, step);
    assert!(set.name.starts_with("step-notes/"), "{}", set.name);
    assert!(set.update_time_ms > 0);
    editor
        .method
        .set_step_note(note(&step, "Start with the camp sites and the ferry"))
        .await
        .unwrap();
    let listed = reader
        .method
        .list_step_notes(pb::ListStepNotesRequest {})
        .await
        .unwrap()
        .into_inner()
        .notes;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].text, "Start with the camp sites and the ferry");
    assert_eq!(listed[0].step, step);

    // A reader may not write one.
    let (code, _) = code_of(
        reader
            .method
            .set_step_note(note(&step, "a reader's note"))
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    // Unknown or malformed steps, over-long text and a missing note are refused, naming the field.
    for (request, field) in [
        (note("method/steps/nosuchstep", "text"), "`step`"),
        (note("method/chapters/x", "text"), "`step`"),
        (note(&step, &"x".repeat(5001)), "`text`"),
        (pb::SetStepNoteRequest { note: None }, "`note`"),
    ] {
        let (code, message) = code_of(editor.method.set_step_note(request).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains(field), "{message}");
    }
    // The hub keeps no notes.
    let mut hub = fed.hub_client().await;
    let (code, _) = code_of(
        hub.method
            .list_step_notes(pb::ListStepNotesRequest {})
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    let (code, _) = code_of(hub.method.set_step_note(note(&step, "national")).await);
    assert_eq!(code, Code::FailedPrecondition);
    // Another city has the step but not Lund's note.
    let mut malmo = fed.client(1).await;
    eventually("Malmö has the step", || {
        let (mut malmo, step) = (malmo.clone(), step.clone());
        async move {
            let handbook = malmo.handbook().await.ok()?;
            handbook
                .chapters
                .iter()
                .flat_map(|c| &c.steps)
                .any(|s| s.name == step)
                .then_some(())
        }
    })
    .await;
    let malmo_notes = malmo
        .method
        .list_step_notes(pb::ListStepNotesRequest {})
        .await
        .unwrap()
        .into_inner()
        .notes;
    assert!(malmo_notes.is_empty(), "{malmo_notes:?}");

    // Empty text removes the note.
    editor.method.set_step_note(note(&step, "")).await.unwrap();
    let listed = reader
        .method
        .list_step_notes(pb::ListStepNotesRequest {})
        .await
        .unwrap()
        .into_inner()
        .notes;
    assert!(listed.is_empty(), "{listed:?}");
    fed.stop_all().await;
}
