//! Translations with Project Fluent: every visible string of the app comes from
//! `locales/sv.ftl` (the default) or `locales/en.ftl`, compiled into the binary.

use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

/// The languages of the app; Swedish is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Sv,
    En,
}

impl Lang {
    /// `sv` or `en`, as in `<html lang>` and the language cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Sv => "sv",
            Lang::En => "en",
        }
    }

    /// Parses a language code; anything unknown is none.
    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "sv" => Some(Lang::Sv),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The other language, offered by the language switch.
    pub fn other(self) -> Lang {
        match self {
            Lang::Sv => Lang::En,
            Lang::En => Lang::Sv,
        }
    }
}

/// The Fluent sources, by language.
pub const SOURCES: [(Lang, &str); 2] = [
    (Lang::Sv, include_str!("../locales/sv.ftl")),
    (Lang::En, include_str!("../locales/en.ftl")),
];

fn bundle(lang: Lang) -> &'static FluentBundle<FluentResource> {
    static SV: OnceLock<FluentBundle<FluentResource>> = OnceLock::new();
    static EN: OnceLock<FluentBundle<FluentResource>> = OnceLock::new();
    let cell = match lang {
        Lang::Sv => &SV,
        Lang::En => &EN,
    };
    cell.get_or_init(|| {
        let (id, source) = match lang {
            Lang::Sv => (unic_langid::langid!("sv-SE"), SOURCES[0].1),
            Lang::En => (unic_langid::langid!("en-GB"), SOURCES[1].1),
        };
        let resource = FluentResource::try_new(source.to_string())
            .unwrap_or_else(|(_, errors)| panic!("{} translation file: {errors:?}", lang.code()));
        let mut bundle = FluentBundle::new_concurrent(vec![id]);
        // The strings go into HTML, where Unicode isolation marks only get in the way.
        bundle.set_use_isolating(false);
        bundle
            .add_resource(resource)
            .unwrap_or_else(|errors| panic!("{} translation file: {errors:?}", lang.code()));
        bundle
    })
}

/// The translator a template gets: `{{ t.get("nav-lessons") }}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tr {
    pub lang: Lang,
}

impl Tr {
    pub fn new(lang: Lang) -> Tr {
        Tr { lang }
    }

    /// The `<html lang>` code.
    pub fn code(&self) -> &'static str {
        self.lang.code()
    }

    /// Whether a message exists in this language.
    pub fn has(&self, id: &str) -> bool {
        bundle(self.lang).has_message(id)
    }

    /// The message `id`; a missing message shows its id (and the unit tests fail).
    pub fn get(&self, id: &str) -> String {
        self.format(id, None)
    }

    /// The message `id` with one argument.
    pub fn arg(&self, id: &str, name: &str, value: impl ToString) -> String {
        let mut args = FluentArgs::new();
        args.set(name.to_string(), FluentValue::from(value.to_string()));
        self.format(id, Some(&args))
    }

    /// The message `id` with several text arguments.
    pub fn args(&self, id: &str, values: &[(&str, &str)]) -> String {
        let mut args = FluentArgs::new();
        for (name, value) in values {
            args.set(name.to_string(), FluentValue::from(value.to_string()));
        }
        self.format(id, Some(&args))
    }

    /// The message `id` with a number argument, for plural forms.
    pub fn count(&self, id: &str, name: &str, value: i64) -> String {
        let mut args = FluentArgs::new();
        args.set(name.to_string(), FluentValue::from(value));
        args.set(
            format!("{name}_text"),
            FluentValue::from(crate::format::number(value)),
        );
        self.format(id, Some(&args))
    }

    /// The message `id` with prepared arguments.
    pub fn format_with(&self, id: &str, args: &FluentArgs) -> String {
        self.format(id, Some(args))
    }

    fn format(&self, id: &str, args: Option<&FluentArgs>) -> String {
        let bundle = bundle(self.lang);
        let Some(pattern) = bundle.get_message(id).and_then(|m| m.value()) else {
            tracing::error!(lang = self.code(), id, "missing translation");
            return id.to_string();
        };
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, args, &mut errors);
        if !errors.is_empty() {
            tracing::error!(lang = self.code(), id, ?errors, "translation error");
        }
        text.into_owned()
    }
}

/// Every message id of a Fluent source: the identifiers that start a line (for the tests).
pub fn message_ids(source: &str) -> Vec<String> {
    source
        .lines()
        .filter(|line| line.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|line| line.split_once(" =").map(|(id, _)| id.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The templates, by file name, as compiled into the app.
    fn templates() -> Vec<(std::path::PathBuf, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "html"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect();
        files.sort();
        assert!(files.len() >= 8, "templates found: {}", files.len());
        files
    }

    /// Removes everything between `open` and `close` (inclusive).
    fn strip(text: &str, open: &str, close: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find(open) {
            out.push_str(&rest[..start]);
            match rest[start + open.len()..].find(close) {
                Some(end) => rest = &rest[start + open.len() + end + close.len()..],
                None => panic!("unclosed {open}"),
            }
            out.push(' ');
        }
        out.push_str(rest);
        out
    }

    /// Literal words a template shows without a translation: text between tags, and the values
    /// of attributes people see or hear (labels, titles, placeholders, messages).
    fn untranslated(template: &str) -> Vec<String> {
        let mut found = Vec::new();
        let without_logic = strip(&strip(template, "{#", "#}"), "{%", "%}");
        // `value` shows only on input buttons, which the templates do not use (below).
        for attribute in ["aria-label", "title", "placeholder", "alt", "data-message"] {
            let marker = format!(" {attribute}=\"");
            let mut rest = without_logic.as_str();
            while let Some(start) = rest.find(&marker) {
                let value_start = start + marker.len();
                // The value ends at the first quote outside a `{{ … }}` expression.
                let mut end = value_start;
                loop {
                    if rest[end..].starts_with("{{") {
                        end += rest[end..].find("}}").expect("closed expression") + 2;
                    } else if rest[end..].starts_with('"') {
                        break;
                    } else {
                        end += rest[end..]
                            .chars()
                            .next()
                            .expect("closed attribute")
                            .len_utf8();
                    }
                }
                let value = &rest[value_start..end];
                let literal = strip(value, "{{", "}}");
                if literal.chars().any(char::is_alphanumeric) {
                    found.push(format!("{attribute}={value:?}"));
                }
                rest = &rest[end..];
            }
        }
        for button in ["type=\"submit\"", "type=\"button\"", "type=\"reset\""] {
            if without_logic.contains(&format!("<input {button}")) {
                found.push(format!("<input {button}> (use <button>)"));
            }
        }
        let text = strip(&strip(&without_logic, "{{", "}}"), "<", ">");
        for word in text.split_whitespace() {
            if word.chars().any(char::is_alphanumeric) {
                found.push(word.to_string());
            }
        }
        found
    }

    #[test]
    fn templates_hold_no_untranslated_text() {
        for (path, text) in templates() {
            let found = untranslated(&text);
            assert!(
                found.is_empty(),
                "{} shows text that is not from the translation files: {found:?}",
                path.display()
            );
        }
    }

    #[test]
    fn the_check_finds_literal_text() {
        assert_eq!(untranslated("<p>Hej {{ t.get(\"x\") }}</p>"), ["Hej"]);
        assert_eq!(
            untranslated("<nav aria-label=\"Meny\"></nav>"),
            ["aria-label=\"Meny\""]
        );
        assert!(untranslated("<p>{{ t.get(\"x\") }} · {{ y }}</p>").is_empty());
        assert!(untranslated("{% if x == \"a\" %}<br>{% endif %}").is_empty());
    }

    /// Message ids a source names literally in a call of `get`, `arg`, `count` or in quotes as
    /// a whole id (`"error-csrf"`).
    fn ids_used(text: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for call in [
            "t.get(\"",
            "t.arg(\"",
            "t.args(\"",
            "t.count(\"",
            ".get(\"",
            "\"error-",
            "\"kind-",
            "\"role-",
            "\"nav-",
            "\"login-",
            "\"lesson-",
            "\"start-",
            "\"node-",
        ] {
            let mut rest = text;
            while let Some(start) = rest.find(call) {
                let from = start + call.len()
                    - if call.starts_with('"') {
                        call.len() - 1
                    } else {
                        0
                    };
                let end = rest[from..]
                    .find('"')
                    .map(|e| e + from)
                    .unwrap_or(rest.len());
                let id = &rest[from..end];
                if !id.is_empty()
                    && id.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
                    && id.contains('-')
                    && !id.ends_with('-')
                {
                    ids.push(id.to_string());
                }
                rest = &rest[end.max(start + 1)..];
            }
        }
        ids
    }

    #[test]
    fn every_message_used_exists_in_both_languages() {
        let mut used = Vec::new();
        for (_, text) in templates() {
            used.extend(ids_used(&text));
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for dir in [src.clone(), src.join("pages")] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "rs") {
                    used.extend(ids_used(&std::fs::read_to_string(path).unwrap()));
                }
            }
        }
        for month in 1..=12 {
            used.push(format!("month-{month}"));
        }
        for status in ["new", "referred", "in_support", "closed"] {
            used.push(format!("signal-status-{status}"));
        }
        for kind in ["signal", "support_contact"] {
            used.push(format!("signal-kind-{kind}"));
        }
        for action in ["read", "list", "create", "update", "erase"] {
            used.push(format!("access-action-{action}"));
        }
        for id in [
            "progress-not_started",
            "progress-started",
            "progress-done",
            "change-added",
            "change-changed",
            "change-removed",
        ] {
            used.push(id.to_string());
        }
        for sector in [
            "municipality",
            "police",
            "region",
            "county_board",
            "civil_society",
            "business",
            "other",
        ] {
            used.push(format!("sector-{sector}"));
        }
        used.push("yes".to_string());
        used.push("no".to_string());
        for category in [
            "female",
            "male",
            "other_or_unknown",
            "unknown",
            "child",
            "adult",
            "swedish",
            "other_eu",
            "non_eu",
            "sexual",
            "forced_labour",
            "forced_criminality",
            "begging",
            "other",
            "police",
            "social_services",
            "civil_society",
            "business",
            "self_or_other",
        ] {
            used.push(format!("cat-{category}"));
        }
        for table in [
            "exploitation_by_sex",
            "exploitation_by_age_group",
            "citizenship_by_sex",
            "referral_source",
        ] {
            used.push(format!("table-{table}"));
        }
        for kind in [
            "trainings_held",
            "people_trained",
            "outreach_sessions",
            "network_meetings",
            "businesses_enrolled",
        ] {
            used.push(format!("activity-{kind}"));
        }
        assert!(used.len() > 100, "ids found: {}", used.len());
        for lang in [Lang::Sv, Lang::En] {
            let t = Tr::new(lang);
            let missing: Vec<_> = used.iter().filter(|id| !t.has(id)).collect();
            assert!(missing.is_empty(), "{} lacks {missing:?}", lang.code());
        }
    }

    #[test]
    fn both_languages_have_the_same_messages() {
        let sv = message_ids(SOURCES[0].1);
        let en = message_ids(SOURCES[1].1);
        assert!(sv.len() > 100);
        let only_sv: Vec<_> = sv.iter().filter(|id| !en.contains(id)).collect();
        let only_en: Vec<_> = en.iter().filter(|id| !sv.contains(id)).collect();
        assert!(
            only_sv.is_empty() && only_en.is_empty(),
            "{only_sv:?} {only_en:?}"
        );
    }

    #[test]
    fn swedish_is_the_default_and_plurals_follow_the_count() {
        let sv = Tr::default();
        assert_eq!(sv.code(), "sv");
        assert_eq!(sv.get("nav-lessons"), "Lärdomar");
        assert_eq!(sv.count("lessons-total", "count", 1), "En lärdom");
        assert_eq!(
            sv.count("lessons-total", "count", 16_000)
                .replace('\u{a0}', " "),
            "16 000 lärdomar"
        );
        assert_eq!(
            Tr::new(Lang::En).count("lessons-total", "count", 2),
            "2 lessons"
        );
        let refusal = sv.arg(
            "error-personal-data",
            "kind",
            sv.get("kind-personal-identity-number"),
        );
        assert!(refusal.contains("ett personnummer"), "{refusal}");
    }
}
