//! Variable substitution. Names are compiled once into an Aho-Corasick automaton (leftmost-longest), and
//! every variable's fully expanded value is computed once when the renderer is built, so rendering a file is
//! a single linear scan. Cycles are found during that expansion and reported by name.

use aho_corasick::{AhoCorasick, MatchKind};
use indexmap::IndexMap;
use serde_json::Value;

use crate::{Error, PlatformFile, validate_rendered};

/// How deep values may reference other values before the renderer gives up (a guard against stack
/// exhaustion on machine-generated settings; real platforms nest two or three levels).
const MAX_DEPTH: usize = 64;

/// The variables of a platform: internals first, then every `settings.NAME.value` of `platform.yml`.
/// A platform variable wins over an internal one of the same name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars(IndexMap<String, Value>);

impl Vars {
    pub fn new(platform: &PlatformFile, internals: &IndexMap<String, Value>) -> Self {
        let mut vars: IndexMap<String, Value> = internals.clone();
        for (_, name, value) in platform.settings() {
            vars.insert(name.to_owned(), value.clone());
        }
        Self(vars)
    }

    /// The variables of one machine: internals < platform `vars` < its zone's overrides < its own
    /// `variables`, each layer winning over the ones before. `zone` must be one of the platform's zones.
    pub fn layered<'a>(
        platform: &PlatformFile,
        internals: &IndexMap<String, Value>,
        zone: Option<&str>,
        own: impl IntoIterator<Item = (&'a String, &'a Value)>,
    ) -> Result<Self, Error> {
        let mut vars = Self::new(platform, internals);
        if let Some(zone) = zone {
            let overrides = platform.zones.get(zone).ok_or_else(|| {
                Error::Platform(format!(
                    "zone {zone:?} is not in platform.yml's zones (it has: {}); add it or fix the follower's zone",
                    if platform.zones.is_empty() {
                        "none".to_owned()
                    } else {
                        platform.zones.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ))
            })?;
            for (_, name, value) in overrides.settings() {
                vars.0.insert(name.to_owned(), value.clone());
            }
        }
        for (name, value) in own {
            vars.0.insert(name.clone(), value.clone());
        }
        Ok(vars)
    }

    pub fn from_map(vars: IndexMap<String, Value>) -> Self {
        Self(vars)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The text a value is inserted as: strings as-is, anything else as compact JSON.
///
/// Whole floats print without a fraction (`2.0` → `2`) as the existing leader's JSON serializer does.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => normalized(other).to_string(),
    }
}

fn normalized(value: &Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                // Exact: |f| < 2^53, so the conversion is lossless.
                #[allow(clippy::cast_possible_truncation)]
                Value::from(f as i64)
            }
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// A rendered file: text, or bytes passed through unchanged because they are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Text(String),
    Binary(Vec<u8>),
}

/// Renders templates with one set of variables. Cheap to share (`Arc`) across threads.
#[derive(Debug)]
pub struct Renderer {
    /// `None` when there is no variable at all.
    matcher: Option<AhoCorasick>,
    /// Fully expanded value of each variable, or why it cannot be expanded.
    expanded: Vec<Result<String, Error>>,
}

impl Renderer {
    /// Compiles the names and expands every value. Never fails on a cycle: the cycle is reported when a
    /// template uses one of its variables (and by [`Renderer::problems`]), so other roles still render.
    pub fn new(vars: &Vars) -> Result<Self, Error> {
        // An empty name would match everywhere; it cannot appear in a template anyway.
        let (names, raw): (Vec<String>, Vec<String>) = vars
            .0
            .iter()
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, value)| (name.clone(), value_text(value)))
            .unzip();
        let matcher = if names.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&names)
                    .map_err(|err| Error::Matcher(err.to_string()))?,
            )
        };
        let expanded = match &matcher {
            Some(matcher) => Expander::run(matcher, &names, &raw),
            None => Vec::new(),
        };
        Ok(Self { matcher, expanded })
    }

    /// Substitutes every variable in `text`.
    pub fn render(&self, text: &str) -> Result<String, Error> {
        let Some(matcher) = &self.matcher else {
            return Ok(text.to_owned());
        };
        let mut out = String::with_capacity(text.len() + text.len() / 4);
        let mut last = 0;
        for found in matcher.find_iter(text) {
            out.push_str(&text[last..found.start()]);
            match &self.expanded[found.pattern().as_usize()] {
                Ok(value) => out.push_str(value),
                Err(err) => return Err(err.clone()),
            }
            last = found.end();
        }
        out.push_str(&text[last..]);
        Ok(out)
    }

    /// Renders one template file: UTF-8 text is substituted then validated by extension (`.json`, `.yml`,
    /// `.yaml`); anything else is passed through as bytes.
    pub fn render_file(&self, path: &str, bytes: Vec<u8>) -> Result<FileContent, Error> {
        match String::from_utf8(bytes) {
            Ok(text) => {
                let rendered = self.render(&text)?;
                validate_rendered(path, &rendered)?;
                Ok(FileContent::Text(rendered))
            }
            Err(not_utf8) => Ok(FileContent::Binary(not_utf8.into_bytes())),
        }
    }

    /// Every variable that cannot be expanded, each cycle reported once.
    pub fn problems(&self) -> Vec<Error> {
        let mut seen: Vec<&Error> = Vec::new();
        for err in self.expanded.iter().filter_map(|r| r.as_ref().err()) {
            if !seen.contains(&err) {
                seen.push(err);
            }
        }
        seen.into_iter().cloned().collect()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    InProgress,
}

/// Depth-first expansion with an explicit path, so a cycle is reported with the names that form it.
struct Expander<'a> {
    matcher: &'a AhoCorasick,
    names: &'a [String],
    raw: &'a [String],
    marks: Vec<Mark>,
    done: Vec<Option<Result<String, Error>>>,
    path: Vec<usize>,
}

impl<'a> Expander<'a> {
    fn run(
        matcher: &'a AhoCorasick,
        names: &'a [String],
        raw: &'a [String],
    ) -> Vec<Result<String, Error>> {
        let mut expander = Self {
            matcher,
            names,
            raw,
            marks: vec![Mark::New; names.len()],
            done: vec![None; names.len()],
            path: Vec::new(),
        };
        (0..names.len()).map(|i| expander.expand(i)).collect()
    }

    fn expand(&mut self, var: usize) -> Result<String, Error> {
        if let Some(result) = &self.done[var] {
            return result.clone();
        }
        if self.marks[var] == Mark::InProgress {
            let start = self.path.iter().position(|&v| v == var).unwrap_or(0);
            let mut cycle: Vec<String> = self.path[start..]
                .iter()
                .map(|&v| self.names[v].clone())
                .collect();
            cycle.push(self.names[var].clone());
            return Err(Error::Cycle(cycle));
        }
        if self.path.len() >= MAX_DEPTH {
            let mut chain: Vec<String> = self.path.iter().map(|&v| self.names[v].clone()).collect();
            chain.push(self.names[var].clone());
            return Err(Error::TooDeep {
                max: MAX_DEPTH,
                chain,
            });
        }
        self.marks[var] = Mark::InProgress;
        self.path.push(var);
        let result = self.substitute(var);
        self.path.pop();
        self.marks[var] = Mark::New;
        self.done[var] = Some(result.clone());
        result
    }

    fn substitute(&mut self, var: usize) -> Result<String, Error> {
        let raw = self.raw[var].as_str();
        let matches: Vec<_> = self.matcher.find_iter(raw).collect();
        if matches.is_empty() {
            return Ok(raw.to_owned());
        }
        let mut out = String::with_capacity(raw.len());
        let mut last = 0;
        for found in matches {
            out.push_str(&raw[last..found.start()]);
            out.push_str(&self.expand(found.pattern().as_usize())?);
            last = found.end();
        }
        out.push_str(&raw[last..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layers_win_in_order_own_zone_platform_internals() {
        let platform = PlatformFile::parse(
            "vars:\n  G:\n    settings:\n      A:\n        value: platform-a\n      B:\n        value: platform-b\n      C:\n        value: platform-c\n\
             zones:\n  eu:\n    vars:\n      G:\n        settings:\n          B:\n            value: eu-b\n          C:\n            value: eu-c\n",
        )
        .unwrap();
        let internals: IndexMap<String, Value> =
            serde_json::from_value(json!({"A": "internal-a", "S": "secret"})).unwrap();
        let own: IndexMap<String, Value> = serde_json::from_value(json!({"C": "own-c"})).unwrap();
        let vars = Vars::layered(&platform, &internals, Some("eu"), &own).unwrap();
        let rendered = Renderer::new(&vars).unwrap().render("A B C S").unwrap();
        assert_eq!(rendered, "platform-a eu-b own-c secret");
        let plain = Vars::layered(&platform, &internals, None, &IndexMap::new()).unwrap();
        assert_eq!(plain, Vars::new(&platform, &internals));
        let err = Vars::layered(&platform, &internals, Some("us"), &own).unwrap_err();
        assert!(
            err.to_string()
                .contains("zone \"us\" is not in platform.yml's zones (it has: eu)"),
            "{err}"
        );
    }

    fn renderer(vars: Value) -> Renderer {
        let map: IndexMap<String, Value> = serde_json::from_value(vars).unwrap();
        Renderer::new(&Vars::from_map(map)).unwrap()
    }

    fn check(vars: Value, template: &str, expected: &str) {
        assert_eq!(renderer(vars).render(template).unwrap(), expected);
    }

    #[test]
    fn substitutes_names_anywhere_in_text() {
        let vars = json!({"DOMAIN": "pryv.me", "MAX_UPLOAD_SIZE_MB": "20"});
        check(
            vars.clone(),
            "https://sw.DOMAIN/access",
            "https://sw.pryv.me/access",
        );
        check(vars.clone(), "DOMAIN-bundle.crt", "pryv.me-bundle.crt");
        check(vars.clone(), "size: MAX_UPLOAD_SIZE_MBm", "size: 20m");
        check(vars, "no variable here", "no variable here");
    }

    #[test]
    fn longest_name_wins_at_one_position() {
        let vars = json!({"REG": "short", "REG_MASTER_IP": "10.0.0.2", "REG_MASTER": "mid"});
        check(vars, "REG_MASTER_IP REG_MASTER REG", "10.0.0.2 mid short");
    }

    #[test]
    fn non_string_values_are_compact_json() {
        let vars = json!({
            "LIST": [1, "a"],
            "HOSTINGS": {"co1": {"ip": "192.0.2.21"}},
            "PORT": 20,
            "ON": true,
            "NOTHING": null,
            "RATIO": 2.5,
            "WHOLE": 2.0
        });
        check(
            vars,
            "LIST HOSTINGS PORT ON NOTHING RATIO WHOLE",
            r#"[1,"a"] {"co1":{"ip":"192.0.2.21"}} 20 true null 2.5 2"#,
        );
    }

    #[test]
    fn object_key_order_is_kept() {
        let vars = json!({"O": {"zeta": 1, "alpha": 2}});
        check(vars, "O", r#"{"zeta":1,"alpha":2}"#);
    }

    #[test]
    fn values_are_substituted_again() {
        let vars = json!({
            "URL": "https://sw.DOMAIN/access",
            "DOMAIN": "pryv.me",
            "ALIAS": "REG_MASTER_IP_ADDRESS",
            "REG_MASTER_IP_ADDRESS": "10.0.0.2",
            "CORES": {"co1": {"ip": "CORE_IP"}},
            "CORE_IP": "10.0.0.3"
        });
        check(
            vars,
            "URL ALIAS CORES",
            r#"https://sw.pryv.me/access 10.0.0.2 {"co1":{"ip":"10.0.0.3"}}"#,
        );
    }

    #[test]
    fn cycles_are_errors_naming_the_variables() {
        let r =
            renderer(json!({"A": "x B", "B": "y A", "SELF": "SELF!", "OK": "fine", "USES": "C"}));
        assert_eq!(r.render("OK").unwrap(), "fine");
        assert_eq!(
            r.render("A").unwrap_err(),
            Error::Cycle(vec!["A".into(), "B".into(), "A".into()])
        );
        assert_eq!(
            r.render("SELF").unwrap_err(),
            Error::Cycle(vec!["SELF".into(), "SELF".into()])
        );
        let problems: Vec<String> = r.problems().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("A -> B -> A"), "{problems:?}");
    }

    #[test]
    fn deep_chains_stop_with_an_error_instead_of_overflowing() {
        let mut map = IndexMap::new();
        for i in 0..10_000 {
            map.insert(format!("V{i:05}_"), Value::from(format!("V{:05}_", i + 1)));
        }
        let r = Renderer::new(&Vars::from_map(map)).unwrap();
        assert!(matches!(r.render("V00000_"), Err(Error::TooDeep { .. })));
        assert_eq!(r.render("V10000_").unwrap(), "V10000_");
    }

    #[test]
    fn platform_variables_win_over_internals() {
        let platform = PlatformFile::parse(
            "vars:\n  G:\n    settings:\n      KEY:\n        value: platform\n",
        )
        .unwrap();
        let internals: IndexMap<String, Value> =
            serde_json::from_value(json!({"KEY": "internal", "SECRET_KEY": "s3"})).unwrap();
        let r = Renderer::new(&Vars::new(&platform, &internals)).unwrap();
        assert_eq!(r.render("KEY SECRET_KEY").unwrap(), "platform s3");
    }

    #[test]
    fn files_are_validated_and_binaries_pass_through() {
        let r = renderer(json!({"OBJ": {"a": 1}, "BROKEN": "{"}));
        assert_eq!(
            r.render_file("/x.json", br#"{"o": OBJ}"#.to_vec()).unwrap(),
            FileContent::Text(r#"{"o": {"a":1}}"#.into())
        );
        assert!(matches!(
            r.render_file("/x.json", br#"{"o": BROKEN}"#.to_vec()),
            Err(Error::InvalidJson(_))
        ));
        assert!(matches!(
            r.render_file("/x.yml", b"a: BROKEN\nb: [".to_vec()),
            Err(Error::InvalidYaml(_))
        ));
        let binary = vec![0xff, 0xfe, b'O', b'B', b'J'];
        assert_eq!(
            r.render_file("/cert.der", binary.clone()).unwrap(),
            FileContent::Binary(binary)
        );
    }
}
