//! Group rules: a pattern over a group's name and what a match grants. Every kind of match
//! (exact, substring, glob, regex) compiles to one regular expression, so matching and
//! case folding behave the same for all of them.

use regex::{Regex, RegexBuilder};

use super::GroupRuleConfig;

/// Bound on a compiled pattern, so a pathological regex in the config cannot take the
/// daemon's memory (the crate's default is 10 MiB per regex; rules are small).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A value with `{capture}` placeholders (`{{` and `}}` for literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Capture(String),
}

impl Template {
    /// Parse `s`; every placeholder must be one of `captures`.
    pub fn parse(s: &str, captures: &[&str]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => {
                                return Err(format!("{s:?}: `{{` without a closing `}}` (write `{{{{` for a brace)"));
                            }
                        }
                    }
                    if !captures.contains(&name.as_str()) {
                        return Err(if captures.is_empty() {
                            format!("{s:?} uses {{{name}}}, but only a `regex` rule has named captures")
                        } else {
                            format!(
                                "{s:?} uses {{{name}}}, which is not a named group of the regex (it has: {})",
                                captures.join(", ")
                            )
                        });
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Capture(name));
                }
                '}' => return Err(format!("{s:?}: a lone `}}` (write `}}}}` for a brace)")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        if pieces.is_empty() {
            return Err("is empty".into());
        }
        Ok(Template(pieces))
    }

    /// The literal value when the template has no placeholder.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Piece::Lit(s)] => Some(s),
            _ => None,
        }
    }

    fn render(&self, caps: &regex::Captures<'_>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Capture(n) => out.push_str(caps.name(n).map(|m| m.as_str()).unwrap_or("")),
            }
        }
        out
    }

    /// Whether some rendering of this template could equal `value` (used to check that a
    /// `seats` or `keep_at_least` key can ever be granted).
    fn may_equal(&self, value: &str) -> bool {
        let mut pat = String::from("^");
        for p in &self.0 {
            match p {
                Piece::Lit(s) => pat.push_str(&regex::escape(s)),
                Piece::Capture(_) => pat.push_str("(?s:.*)"),
            }
        }
        pat.push('$');
        Regex::new(&pat).map(|r| r.is_match(value)).unwrap_or(false)
    }

    fn show(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Lit(s) => s.replace('{', "{{").replace('}', "}}"),
                Piece::Capture(n) => format!("{{{n}}}"),
            })
            .collect()
    }
}

/// How the rule was written, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Contains,
    Glob,
    Regex,
}

impl MatchKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Contains => "contains",
            MatchKind::Glob => "glob",
            MatchKind::Regex => "regex",
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct GroupRule {
    /// `policy.group_rules[N]`, for errors.
    pub key: String,
    /// The rule's label (`name`, or `rule N` counting from 1).
    pub label: String,
    pub kind: MatchKind,
    /// The pattern as written.
    pub pattern: String,
    pub case_sensitive: bool,
    matcher: Regex,
    pub role: Option<Template>,
    pub entitlement: Option<Template>,
    pub class: Option<String>,
}

/// What one rule gives one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Index of the rule in `policy.group_rules`.
    pub rule: usize,
    pub role: Option<String>,
    pub entitlement: Option<String>,
    pub class: Option<String>,
}

/// A glob as a regex: `*` any run, `?` one character, everything else literal; anchored.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    let mut lit = String::new();
    for c in glob.chars() {
        match c {
            '*' | '?' => {
                out.push_str(&regex::escape(&std::mem::take(&mut lit)));
                out.push_str(if c == '*' { "(?s:.*)" } else { "(?s:.)" });
            }
            c => lit.push(c),
        }
    }
    out.push_str(&regex::escape(&lit));
    out.push('$');
    out
}

impl GroupRule {
    pub fn compile(index: usize, cfg: &GroupRuleConfig) -> Result<GroupRule, Vec<(String, String)>> {
        let key = format!("policy.group_rules[{index}]");
        let mut problems = Vec::new();
        let given: Vec<(MatchKind, &String, &str)> = [
            (MatchKind::Exact, &cfg.exact, "exact"),
            (MatchKind::Contains, &cfg.contains, "contains"),
            (MatchKind::Glob, &cfg.glob, "glob"),
            (MatchKind::Regex, &cfg.regex, "regex"),
        ]
        .into_iter()
        .filter_map(|(k, v, n)| v.as_ref().map(|v| (k, v, n)))
        .collect();
        let (kind, pattern, field) = match given.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(vec![(
                    key,
                    "needs one of `exact`, `contains`, `glob` or `regex` (the group names it matches)".into(),
                )]);
            }
            many => {
                let names: Vec<&str> = many.iter().map(|m| m.2).collect();
                return Err(vec![(key, format!("gives {}; give exactly one", names.join(" and ")))]);
            }
        };
        if pattern.is_empty() {
            problems.push((format!("{key}.{field}"), "is empty".into()));
        }
        let source = match kind {
            MatchKind::Exact => format!("^{}$", regex::escape(pattern)),
            MatchKind::Contains => regex::escape(pattern),
            MatchKind::Glob => glob_to_regex(pattern),
            MatchKind::Regex => pattern.clone(),
        };
        let matcher = RegexBuilder::new(&source)
            .case_insensitive(!cfg.case_sensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| vec![(format!("{key}.{field}"), format!("is not a valid pattern: {e}"))])?;
        let captures: Vec<&str> = matcher.capture_names().flatten().collect();
        let mut template = |field: &str, v: &Option<String>| -> Option<Template> {
            let v = v.as_ref()?;
            match Template::parse(v, &captures) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push((format!("{key}.{field}"), e));
                    None
                }
            }
        };
        let role = template("role", &cfg.role);
        let entitlement = template("entitlement", &cfg.entitlement);
        if let Some(c) = &cfg.class
            && c.trim().is_empty()
        {
            problems.push((format!("{key}.class"), "is empty; name the class (e.g. \"licence\") or remove it".into()));
        }
        if cfg.role.is_none() && cfg.entitlement.is_none() && cfg.class.is_none() {
            problems.push((key.clone(), "grants nothing: give `role`, `entitlement` and/or `class`".into()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(GroupRule {
            label: if cfg.name.is_empty() { format!("rule {}", index + 1) } else { cfg.name.clone() },
            key,
            kind,
            pattern: pattern.clone(),
            case_sensitive: cfg.case_sensitive,
            matcher,
            role,
            entitlement,
            class: cfg.class.clone(),
        })
    }

    pub fn is_match(&self, group_name: &str) -> bool {
        self.matcher.is_match(group_name)
    }

    /// What the rule grants a group of this name; `None` when it does not match.
    pub fn grant(&self, index: usize, group_name: &str) -> Option<Grant> {
        let caps = self.matcher.captures(group_name)?;
        Some(Grant {
            rule: index,
            role: self.role.as_ref().map(|t| t.render(&caps)).filter(|s| !s.is_empty()),
            entitlement: self.entitlement.as_ref().map(|t| t.render(&caps)).filter(|s| !s.is_empty()),
            class: self.class.clone(),
        })
    }

    /// The role when it has no placeholder.
    pub fn literal_role(&self) -> Option<&str> {
        self.role.as_ref().and_then(Template::literal)
    }

    pub fn may_grant_role(&self, role: &str) -> bool {
        self.role.as_ref().is_some_and(|t| t.may_equal(role))
    }

    pub fn may_grant_entitlement(&self, ent: &str) -> bool {
        self.entitlement.as_ref().is_some_and(|t| t.may_equal(ent))
    }

    /// `"admins": contains "admin" (case-insensitive) -> role admin, class role`
    pub fn describe(&self) -> String {
        let mut grants = Vec::new();
        if let Some(r) = &self.role {
            grants.push(format!("role {}", r.show()));
        }
        if let Some(e) = &self.entitlement {
            grants.push(format!("entitlement {}", e.show()));
        }
        if let Some(c) = &self.class {
            grants.push(format!("exclusive class {c}"));
        }
        format!(
            "{:?}: {} {:?} ({}) -> {}",
            self.label,
            self.kind.as_str(),
            self.pattern,
            if self.case_sensitive { "case-sensitive" } else { "case-insensitive" },
            grants.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(f: impl FnOnce(&mut GroupRuleConfig)) -> Result<GroupRule, Vec<(String, String)>> {
        let mut c = GroupRuleConfig { role: Some("r".into()), ..Default::default() };
        f(&mut c);
        GroupRule::compile(0, &c)
    }

    #[test]
    fn each_kind_matches() {
        let exact = rule(|c| c.exact = Some("Admins".into())).unwrap();
        assert!(exact.is_match("admins") && exact.is_match("ADMINS") && !exact.is_match("Admins2"));
        let exact_cs = rule(|c| {
            c.exact = Some("Admins".into());
            c.case_sensitive = true
        })
        .unwrap();
        assert!(exact_cs.is_match("Admins") && !exact_cs.is_match("admins"));
        let contains = rule(|c| c.contains = Some("admin".into())).unwrap();
        for n in ["LocalStack-Admins-Prod", "XD5-XD5-LA1000_AuthLocalstackAdmin"] {
            assert!(contains.is_match(n), "{n}");
        }
        assert!(!contains.is_match("members"));
        let glob = rule(|c| c.glob = Some("Team-*-Lead?".into())).unwrap();
        assert!(glob.is_match("team-core-leads") && glob.is_match("Team--LeadX") && !glob.is_match("Team-core-Lead"));
        // Regex metacharacters in exact/contains/glob are literal.
        let lit = rule(|c| c.glob = Some("a.b(*)".into())).unwrap();
        assert!(lit.is_match("a.b(zz)") && !lit.is_match("axb(zz)"));
    }

    #[test]
    fn regex_captures_fill_the_values() {
        let r = rule(|c| {
            c.regex = Some(r"^(?P<plan>.+)-(?P<product>[^-]+)-(?P<sub>sub_\w+)$".into());
            c.role = None;
            c.entitlement = Some("{product}:{sub}".into());
            c.class = Some("licence".into());
        })
        .unwrap();
        let g = r.grant(3, "Enterprise Plan-AWS-sub_1RqpMYGCs0LNOzY9UszOGJkL").unwrap();
        assert_eq!(g.entitlement.as_deref(), Some("AWS:sub_1RqpMYGCs0LNOzY9UszOGJkL"));
        assert_eq!((g.rule, g.role, g.class.as_deref()), (3, None, Some("licence")));
        assert!(r.grant(0, "Enterprise Plan-AWS").is_none());
        assert!(r.may_grant_entitlement("AWS:sub_x") && !r.may_grant_entitlement("GCP"));
    }

    #[test]
    fn bad_rules_name_the_key() {
        type Case = (Box<dyn FnOnce(&mut GroupRuleConfig)>, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|_| {}), "policy.group_rules[0]", "needs one of"),
            (
                Box::new(|c| {
                    c.exact = Some("a".into());
                    c.glob = Some("b".into())
                }),
                "policy.group_rules[0]",
                "exact and glob",
            ),
            (Box::new(|c| c.regex = Some("(".into())), "policy.group_rules[0].regex", "not a valid pattern"),
            (
                Box::new(|c| {
                    c.regex = Some("(?P<a>x)".into());
                    c.role = Some("{b}".into())
                }),
                "policy.group_rules[0].role",
                "not a named group",
            ),
            (
                Box::new(|c| {
                    c.exact = Some("x".into());
                    c.entitlement = Some("{a}".into())
                }),
                "policy.group_rules[0].entitlement",
                "only a `regex` rule",
            ),
            (
                Box::new(|c| {
                    c.exact = Some("x".into());
                    c.role = None
                }),
                "policy.group_rules[0]",
                "grants nothing",
            ),
            (Box::new(|c| c.exact = Some(String::new())), "policy.group_rules[0].exact", "is empty"),
        ];
        for (f, key, needle) in cases {
            let errs = rule(f).unwrap_err();
            assert!(errs.iter().any(|(k, m)| k == key && m.contains(needle)), "{key} / {needle}: {errs:?}");
        }
    }

    #[test]
    fn templates() {
        assert_eq!(Template::parse("{{x}}", &[]).unwrap().literal(), Some("{x}"));
        assert!(Template::parse("{x", &["x"]).is_err());
        assert!(Template::parse("x}", &[]).is_err());
        assert!(Template::parse("", &[]).is_err());
    }

    proptest::proptest! {
        /// A glob without wildcards matches exactly itself (any characters, regex ones
        /// included), and never panics.
        #[test]
        fn glob_of_a_literal_is_exact(s in "\\PC{0,20}", other in "\\PC{0,20}") {
            let s = s.replace(['*', '?'], "");
            let re = Regex::new(&glob_to_regex(&s)).unwrap();
            proptest::prop_assert!(re.is_match(&s));
            if other != s {
                proptest::prop_assert!(!re.is_match(&other));
            }
        }

        /// Template parsing never panics, and a parsed literal shows back as it was written
        /// once braces are doubled.
        #[test]
        fn template_parse_never_panics(s in "[a-z{}]{0,12}") {
            if let Ok(t) = Template::parse(&s, &["a", "b"]) {
                let shown = t.show();
                proptest::prop_assert_eq!(Template::parse(&shown, &["a", "b"]).unwrap(), t);
            }
        }

        /// `contains` matches exactly when the name has the pattern as a substring (case
        /// folded), whatever characters it holds.
        #[test]
        fn contains_is_substring(pat in "[a-zA-Z.*+()]{1,4}", name in "[a-zA-Z.*+()]{0,12}") {
            let r = GroupRule::compile(0, &GroupRuleConfig {
                contains: Some(pat.clone()), role: Some("r".into()), ..Default::default()
            }).unwrap();
            proptest::prop_assert_eq!(r.is_match(&name), name.to_lowercase().contains(&pat.to_lowercase()));
        }
    }
}
