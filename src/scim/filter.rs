//! SCIM filter and PATCH-path text (RFC 7644 §3.4.2.2 and §3.5.2): parsing it into the
//! neutral AST of [`crate::model::query`], printing that AST back as canonical text, and
//! evaluating a filter against an in-memory JSON resource.
//!
//! Owns: the filter grammar, its error messages (with the column where the input broke),
//! canonical filter text, and the in-memory meaning of a filter. Must not touch: I/O, SQL
//! (`store` translates the AST itself), HTTP, or schema knowledge: paths come out as written,
//! with a default [`AttrInfo`](crate::model::query::AttrInfo); `scim::schema` resolves them.
//!
//! The parser is hand-written recursive descent over `char`s so that every error can name
//! a 0-based character column. Its recursion is bounded by [`MAX_NESTING`] and the size of
//! the tree by [`MAX_TERMS`], so hostile input gets an error, never a stack overflow, and
//! every consumer that walks a parsed tree recursively is safe too.
//!
//! Leniency, because IdPs are not all strict: keywords and operators are case-insensitive,
//! any run of spaces, tabs or newlines separates tokens, `not(` needs no space, and a
//! PATCH path may carry surrounding whitespace. Strictness, because a filter that means
//! something other than what the client thinks is worse than an error: trailing garbage
//! and nested value filters are rejected. One extension, because Microsoft Entra ID sends
//! it: `emails[type eq "work"].value eq "x"` (PATCH-path syntax followed by a comparison)
//! is read as `emails[type eq "work" and value eq "x"]`.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

use serde_json::{Map, Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::model::query::{AttrInfo, AttrPath, AttrType, CompareOp, Filter, Literal, PatchPath};
use crate::scim::error::ScimError;

/// Deepest nesting of `(`, `not (` and `[` a filter may have. Real IdP filters nest one or
/// two levels; the bound keeps the parser's recursion (and everyone else's) shallow.
pub const MAX_NESTING: usize = 64;

/// Most attribute expressions (`x eq y`, `x pr`) one filter may hold. `a and b and c ...`
/// builds a left-deep tree, so this also bounds the depth of any parsed tree.
pub const MAX_TERMS: usize = 256;

/// Why a filter or path did not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 0-based character (not byte) column where the input broke.
    pub position: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.position, self.message)
    }
}

impl std::error::Error for FilterError {}

impl From<FilterError> for ScimError {
    /// A bad `filter` query parameter is `400 invalidFilter` (RFC 7644 §3.4.2.2).
    fn from(e: FilterError) -> Self {
        ScimError::invalid_filter(format!("invalid filter {e}"))
    }
}

impl FilterError {
    /// A bad PATCH `path` is `400 invalidPath` (RFC 7644 §3.5.2), not `invalidFilter`.
    #[must_use]
    pub fn into_path_error(self) -> ScimError {
        ScimError::invalid_path(format!("invalid path {self}"))
    }
}

/// Parses a SCIM filter (RFC 7644 §3.4.2.2), e.g. `userName eq "bjensen"`.
///
/// Precedence is `not` > `and` > `or`, both binary operators left-associative. Paths inside
/// `attr[...]` name sub-attributes of one element and come out with `sub == None`.
///
/// # Errors
///
/// A [`FilterError`] naming the column where `input` stops being a filter, or where it
/// exceeds [`MAX_NESTING`] or [`MAX_TERMS`].
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    let mut p = Parser::new(input);
    p.skip_ws();
    if p.at_end() {
        return Err(p.error(p.pos, "empty filter"));
    }
    let filter = p.parse_or(Scope::Resource)?;
    p.skip_ws();
    match p.peek() {
        None => Ok(filter),
        Some(')') => Err(p.error(p.pos, "unmatched \")\"")),
        Some(']') => Err(p.error(p.pos, "unmatched \"]\"")),
        Some(_) => Err(
            p.error(p.pos, format!("expected \"and\", \"or\" or the end of the filter, found {}", p.describe(p.pos)))
        ),
    }
}

/// Parses a PATCH operation's `path` (RFC 7644 §3.5.2): `PATH = attrPath / valuePath [subAttr]`,
/// e.g. `members`, `name.familyName`, `emails[type eq "work"].value`, or a URN-qualified
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`.
///
/// A bare schema URN (`urn:...:enterprise:2.0:User`, meaning the whole extension) is
/// syntactically an attribute `User` under the URN `urn:...:enterprise:2.0`; telling the two
/// apart needs the schema, so `scim::schema` does it (`format!("{urn}:{name}")` is a URN).
///
/// # Errors
///
/// A [`FilterError`] naming the column where `input` stops being a path; turn it into
/// `400 invalidPath` with [`FilterError::into_path_error`].
pub fn parse_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut p = Parser::new(input);
    p.skip_ws();
    if p.at_end() {
        return Err(p.error(p.pos, "empty path"));
    }
    if !p.peek().is_some_and(starts_path) {
        return Err(p.error(p.pos, format!("expected an attribute path, found {}", p.describe(p.pos))));
    }
    let attr = p.parse_attr_path(Scope::Resource)?;
    p.skip_ws();
    let mut path = PatchPath { attr, filter: None, filter_sub: None };
    if p.peek() == Some('[') {
        path.filter = Some(p.parse_value_filter(Scope::Resource)?);
        if p.peek() == Some('.') {
            p.pos += 1;
            let from = p.pos;
            let end = p.scan(from, is_path_char);
            if let Some(i) = (from..end).find(|&i| matches!(p.chars[i], '.' | ':')) {
                return Err(p.error(
                    i,
                    "only one sub-attribute may follow a value filter (as in emails[type eq \"work\"].value)",
                ));
            }
            path.filter_sub = Some(p.attr_name(from, end, "a sub-attribute name after \".\"")?);
            p.pos = end;
        }
    }
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(p.pos, format!("expected the end of the path, found {}", p.describe(p.pos))));
    }
    Ok(path)
}

// ---------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------

/// What the paths being parsed are relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The resource: paths may carry a URN and a sub-attribute, and `[` opens a value filter.
    Resource,
    /// One element of a multi-valued attribute, inside `attr[...]`: bare sub-attribute names
    /// only (RFC 7644 §3.4.2.2 errata 4690: value filters do not nest).
    Element,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    nesting: usize,
    terms: usize,
}

/// Characters of keywords and operators (`and`, `eq`) and of ATTRNAME.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Characters an attribute path is scanned over before it is split into URN, name and
/// sub-attribute (`$` for `$ref`, `:` and `.` for the separators).
fn is_path_char(c: char) -> bool {
    is_word_char(c) || matches!(c, '.' | ':' | '$')
}

fn starts_path(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '$'
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

const OPERATORS: [(&str, CompareOp); 9] = [
    ("eq", CompareOp::Eq),
    ("ne", CompareOp::Ne),
    ("co", CompareOp::Co),
    ("sw", CompareOp::Sw),
    ("ew", CompareOp::Ew),
    ("gt", CompareOp::Gt),
    ("ge", CompareOp::Ge),
    ("lt", CompareOp::Lt),
    ("le", CompareOp::Le),
];

fn compare_op(word: &str) -> Option<CompareOp> {
    OPERATORS.iter().find(|(name, _)| name.eq_ignore_ascii_case(word)).map(|&(_, op)| op)
}

fn op_str(op: CompareOp) -> &'static str {
    OPERATORS.iter().find(|&&(_, o)| o == op).map_or("eq", |&(name, _)| name)
}

impl Parser {
    fn new(input: &str) -> Self {
        Parser { chars: input.chars().collect(), pos: 0, nesting: 0, terms: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn error(&self, position: usize, message: impl Into<String>) -> FilterError {
        FilterError { position, message: message.into() }
    }

    fn skip_ws(&mut self) {
        self.pos = self.scan(self.pos, is_ws);
    }

    /// End of the run of characters satisfying `pred` that starts at `from`.
    fn scan(&self, from: usize, pred: impl Fn(char) -> bool) -> usize {
        let mut end = from;
        while self.chars.get(end).is_some_and(|&c| pred(c)) {
            end += 1;
        }
        end
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.chars.get(from..to).map(|s| s.iter().collect()).unwrap_or_default()
    }

    fn word_is(&self, from: usize, to: usize, kw: &str) -> bool {
        self.text(from, to).eq_ignore_ascii_case(kw)
    }

    /// What stands at `at`, for "found ..." in messages: a whole word, or one character.
    fn describe(&self, at: usize) -> String {
        const MAX: usize = 24;
        let Some(&c) = self.chars.get(at) else { return "end of input".to_owned() };
        let mut shown = if is_word_char(c) {
            let end = self.scan(at, is_word_char).min(at + MAX);
            self.text(at, end)
        } else {
            c.to_string()
        };
        if is_word_char(c) && self.scan(at, is_word_char) > at + MAX {
            shown.push('…');
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = write_json_string(&mut out, &shown);
        out
    }

    /// Enters one level of `(`, `not (` or `[` opened at `at`.
    fn enter(&mut self, at: usize) -> Result<(), FilterError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.error(at, format!("the filter nests deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Consumes the keyword `kw` (after optional whitespace) if it is the next word.
    fn eat_keyword(&mut self, kw: &str) -> bool {
        let start = self.scan(self.pos, is_ws);
        let end = self.scan(start, is_word_char);
        if self.word_is(start, end, kw) {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn parse_or(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let mut left = self.parse_and(scope)?;
        while self.eat_keyword("or") {
            let right = self.parse_and(scope)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary(scope)?;
        while self.eat_keyword("and") {
            let right = self.parse_unary(scope)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        self.skip_ws();
        let at = self.pos;
        match self.peek() {
            Some('(') => self.parse_group(scope),
            Some(c) if starts_path(c) => {
                let end = self.scan(at, is_word_char);
                if self.word_is(at, end, "not") && self.not_is_keyword(end) {
                    self.pos = end;
                    self.skip_ws();
                    if self.peek() != Some('(') {
                        return Err(self.error(
                            self.pos,
                            format!("expected \"(\" after \"not\", found {}", self.describe(self.pos)),
                        ));
                    }
                    return Ok(Filter::Not(Box::new(self.parse_group(scope)?)));
                }
                self.parse_attr_expr(scope)
            }
            _ => {
                Err(self
                    .error(at, format!("expected an attribute path, \"(\" or \"not\", found {}", self.describe(at))))
            }
        }
    }

    /// Whether a `not` ending at `end` is the operator rather than an attribute called
    /// `not` (ATTRNAME does not exclude it): it is an attribute when a path or an operator
    /// follows, as in `not eq "x"` or `not.sub pr`.
    fn not_is_keyword(&self, end: usize) -> bool {
        if matches!(self.chars.get(end), Some('.' | ':' | '[')) {
            return false;
        }
        let next = self.scan(end, is_ws);
        match self.chars.get(next) {
            Some('[') => false,
            Some(&c) if is_word_char(c) => {
                let word = self.text(next, self.scan(next, is_word_char));
                !(word.eq_ignore_ascii_case("pr") || compare_op(&word).is_some())
            }
            _ => true,
        }
    }

    /// `"(" filter ")"`, with `self.pos` on the `(`.
    fn parse_group(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let open = self.pos;
        self.enter(open)?;
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(')') {
            return Err(self.error(self.pos, "empty parentheses"));
        }
        let inner = self.parse_or(scope)?;
        self.skip_ws();
        if self.peek() != Some(')') {
            return Err(self.error(
                self.pos,
                format!(
                    "expected \"and\", \"or\" or \")\" closing the \"(\" at column {open}, found {}",
                    self.describe(self.pos)
                ),
            ));
        }
        self.pos += 1;
        self.leave();
        Ok(inner)
    }

    /// `"[" valFilter "]"`, with `self.pos` on the `[`.
    fn parse_value_filter(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let open = self.pos;
        if scope == Scope::Element {
            return Err(self.error(open, "value filters cannot be nested inside a value filter"));
        }
        self.enter(open)?;
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(']') {
            return Err(self.error(self.pos, "empty value filter"));
        }
        let inner = self.parse_or(Scope::Element)?;
        self.skip_ws();
        if self.peek() != Some(']') {
            return Err(self.error(
                self.pos,
                format!(
                    "expected \"and\", \"or\" or \"]\" closing the \"[\" at column {open}, found {}",
                    self.describe(self.pos)
                ),
            ));
        }
        self.pos += 1;
        self.leave();
        Ok(inner)
    }

    /// `attrPath "pr"`, `attrPath compareOp compValue` or `attrPath "[" valFilter "]"`.
    fn parse_attr_expr(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let start = self.pos;
        let path = self.parse_attr_path(scope)?;
        let path_text = self.text(start, self.pos);
        self.skip_ws();
        if self.peek() == Some('[') {
            let mut inner = self.parse_value_filter(scope)?;
            if self.peek() == Some('.') {
                let last = self.parse_sub_after_value_filter(&path_text)?;
                inner = Filter::And(Box::new(inner), Box::new(last));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error(start, format!("the filter has more than {MAX_TERMS} comparisons")));
        }
        let op_at = self.pos;
        let op_end = self.scan(op_at, is_word_char);
        let word = self.text(op_at, op_end);
        if word.eq_ignore_ascii_case("pr") {
            self.pos = op_end;
            return Ok(Filter::Present(path));
        }
        let Some(op) = compare_op(&word) else {
            let mut quoted = String::new();
            let _ = write_json_string(&mut quoted, &path_text);
            return Err(self.error(
                op_at,
                format!("expected a comparison operator or \"pr\" after {quoted}, found {}", self.describe(op_at)),
            ));
        };
        self.pos = op_end;
        let value = self.parse_literal(op)?;
        Ok(Filter::Compare(path, op, value))
    }

    /// `"." subAttr ("pr" / compareOp compValue)` after `attr[valFilter]`, with `self.pos` on
    /// the `.`: the form Microsoft Entra ID sends for a matching attribute such as
    /// `emails[type eq "work"].value` (`emails[type eq "work"].value eq "a@b.example"`). It is
    /// not in RFC 7644's filter grammar, which only has it in PATCH paths; it means the
    /// element the brackets select has that sub-attribute value, so it is returned as one
    /// more condition on the same element: `emails[type eq "work" and value eq "a@b.example"]`.
    fn parse_sub_after_value_filter(&mut self, path_text: &str) -> Result<Filter, FilterError> {
        let dot = self.pos;
        self.pos += 1;
        let start = self.pos;
        let end = self.scan(start, is_path_char);
        if let Some(i) = (start..end).find(|&i| matches!(self.chars[i], ':' | '.')) {
            return Err(self.error(i, "after \"[...]\" name one sub-attribute of the element, as in \"[...].value\""));
        }
        let name = self.attr_name(start, end, "a sub-attribute name after \"].\"")?;
        self.pos = end;
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error(dot, format!("the filter has more than {MAX_TERMS} comparisons")));
        }
        let sub = AttrPath { urn: None, name, sub: None, info: AttrInfo::default() };
        self.skip_ws();
        let op_at = self.pos;
        let op_end = self.scan(op_at, is_word_char);
        let word = self.text(op_at, op_end);
        if word.eq_ignore_ascii_case("pr") {
            self.pos = op_end;
            return Ok(Filter::Present(sub));
        }
        let Some(op) = compare_op(&word) else {
            let mut quoted = String::new();
            let _ = write_json_string(&mut quoted, &format!("{path_text}[...].{}", sub.name));
            return Err(self.error(
                op_at,
                format!("expected a comparison operator or \"pr\" after {quoted}, found {}", self.describe(op_at)),
            ));
        };
        self.pos = op_end;
        let value = self.parse_literal(op)?;
        Ok(Filter::Compare(sub, op, value))
    }

    /// `attrPath = [URI ":"] ATTRNAME *1subAttr`. The whole run of path characters is
    /// scanned first and split afterwards: the URN ends at the *last* `:` (schema URNs
    /// contain dots, as in `...:enterprise:2.0:User`), and only the rest splits on `.`.
    fn parse_attr_path(&mut self, scope: Scope) -> Result<AttrPath, FilterError> {
        let start = self.pos;
        if !self.peek().is_some_and(starts_path) {
            return Err(self.error(start, format!("expected an attribute path, found {}", self.describe(start))));
        }
        let end = self.scan(start, is_path_char);
        self.pos = end;
        if scope == Scope::Element
            && let Some(i) = (start..end).find(|&i| matches!(self.chars[i], ':' | '.'))
        {
            return Err(self.error(
                i,
                "inside a value filter, paths name sub-attributes of one element: no schema URN and no \".\"",
            ));
        }
        let last_colon = (start..end).rev().find(|&i| self.chars[i] == ':');
        let (urn, name_start) = match last_colon {
            Some(colon) => (Some(self.parse_urn(start, colon)?), colon + 1),
            None => (None, start),
        };
        let dots: Vec<usize> = (name_start..end).filter(|&i| self.chars[i] == '.').collect();
        let name_end = dots.first().copied().unwrap_or(end);
        let what = if urn.is_some() { "an attribute name after the schema URN" } else { "an attribute name" };
        let name = self.attr_name(name_start, name_end, what)?;
        let sub = match dots.as_slice() {
            [] => None,
            [dot] => Some(self.attr_name(dot + 1, end, "a sub-attribute name after \".\"")?),
            [_, second, ..] => {
                return Err(
                    self.error(*second, "an attribute path has at most one sub-attribute (as in \"name.givenName\")")
                );
            }
        };
        Ok(AttrPath { urn, name, sub, info: AttrInfo::default() })
    }

    /// The schema URN in `chars[start..colon]`: non-empty `:`-separated segments starting
    /// with a letter.
    fn parse_urn(&self, start: usize, colon: usize) -> Result<String, FilterError> {
        let mut segment_start = start;
        for i in start..=colon {
            let c = self.chars[i];
            if c == ':' {
                if i == segment_start {
                    return Err(self.error(i, "empty segment in schema URN"));
                }
                segment_start = i + 1;
            } else if c == '$' {
                return Err(self.error(i, "unexpected \"$\" in schema URN"));
            }
        }
        Ok(self.text(start, colon))
    }

    /// `ATTRNAME = ALPHA *("-" / "_" / DIGIT / ALPHA)` in `chars[from..to]`, or `$ref`
    /// (RFC 7643 §2.1 allows it for reference sub-attributes such as `members.$ref`).
    fn attr_name(&self, from: usize, to: usize, what: &str) -> Result<String, FilterError> {
        let text = self.text(from, to);
        if text.is_empty() {
            return Err(self.error(from, format!("expected {what}, found {}", self.describe(from))));
        }
        if text.starts_with('$') {
            if text.eq_ignore_ascii_case("$ref") {
                return Ok(text);
            }
            return Err(self.error(from, "the only attribute name starting with \"$\" is \"$ref\""));
        }
        if !text.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(
                self.error(from, format!("an attribute name must start with a letter, found {}", self.describe(from)))
            );
        }
        if let Some(i) = (from..to).find(|&i| !is_word_char(self.chars[i])) {
            return Err(self.error(i, format!("unexpected {} in attribute name", self.describe(i))));
        }
        Ok(text)
    }

    /// `compValue = false / null / true / number / string`, after the operator `op`.
    fn parse_literal(&mut self, op: CompareOp) -> Result<Literal, FilterError> {
        self.skip_ws();
        let at = self.pos;
        match self.peek() {
            Some('"') => self.parse_string().map(Literal::String),
            Some(c) if c == '-' || c.is_ascii_digit() => self.parse_number().map(Literal::Number),
            Some(c) if is_word_char(c) => {
                let end = self.scan(at, is_word_char);
                let word = self.text(at, end);
                let literal = if word.eq_ignore_ascii_case("true") {
                    Literal::Bool(true)
                } else if word.eq_ignore_ascii_case("false") {
                    Literal::Bool(false)
                } else if word.eq_ignore_ascii_case("null") {
                    Literal::Null
                } else {
                    return Err(self.error(
                        at,
                        format!(
                            "expected a value after \"{}\" (a double-quoted string, a number, true, false \
                             or null), found {}; strings must be in double quotes",
                            op_str(op),
                            self.describe(at)
                        ),
                    ));
                };
                self.pos = end;
                Ok(literal)
            }
            _ => Err(self.error(
                at,
                format!(
                    "expected a value after \"{}\" (a double-quoted string, a number, true, false or null), \
                     found {}",
                    op_str(op),
                    self.describe(at)
                ),
            )),
        }
    }

    /// A JSON string (RFC 8259 §7), with `self.pos` on the opening quote. Raw control
    /// characters are tolerated: the filter came through URL decoding, not a JSON parser.
    fn parse_string(&mut self) -> Result<String, FilterError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error(open, "the string starting here is never closed (missing '\"')"));
            };
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => out.push(self.parse_escape(self.pos - 1)?),
                c => out.push(c),
            }
        }
    }

    /// The escape whose backslash is at `backslash`; `self.pos` is just after it.
    fn parse_escape(&mut self, backslash: usize) -> Result<char, FilterError> {
        let Some(c) = self.peek() else {
            return Err(self.error(backslash, "unfinished escape at the end of the input"));
        };
        self.pos += 1;
        Ok(match c {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // UTF-16 high surrogate: JSON spells astral characters as a pair.
                        let low_at = self.pos;
                        if self.peek() != Some('\\') || self.chars.get(low_at + 1) != Some(&'u') {
                            return Err(self.error(
                                backslash,
                                "a \\u escape of a high surrogate must be followed by one of a low surrogate",
                            ));
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.error(low_at, "expected a \\u escape of a low surrogate (DC00-DFFF)"));
                        }
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).ok_or_else(|| self.error(backslash, "invalid \\u escape"))?
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self
                            .error(backslash, "a \\u escape of a low surrogate must follow one of a high surrogate"));
                    }
                    _ => char::from_u32(unit).ok_or_else(|| self.error(backslash, "invalid \\u escape"))?,
                }
            }
            other => {
                return Err(self.error(
                    backslash,
                    format!(
                        "invalid escape \"\\{other}\" in string (valid: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"
                    ),
                ));
            }
        })
    }

    fn hex4(&mut self) -> Result<u32, FilterError> {
        let mut unit = 0;
        for _ in 0..4 {
            let Some(digit) = self.peek().and_then(|c| c.to_digit(16)) else {
                return Err(self.error(self.pos, "expected four hex digits after \\u"));
            };
            unit = unit * 16 + digit;
            self.pos += 1;
        }
        Ok(unit)
    }

    /// A JSON number (RFC 8259 §6), with `self.pos` on its first character.
    fn parse_number(&mut self) -> Result<Number, FilterError> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        match self.peek() {
            Some('0') => self.pos += 1,
            Some(c) if c.is_ascii_digit() => self.pos = self.scan(self.pos, |c| c.is_ascii_digit()),
            _ => return Err(self.error(self.pos, format!("expected a digit, found {}", self.describe(self.pos)))),
        }
        if self.peek() == Some('.') {
            self.pos += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        if self.peek().is_some_and(|c| is_word_char(c) || c == '.') {
            let end = self.scan(self.pos, |c| is_word_char(c) || c == '.');
            return Err(self.error(start, format!("malformed number \"{}\"", self.text(start, end))));
        }
        let text = self.text(start, self.pos);
        number_from_json(&text).ok_or_else(|| self.error(start, format!("number {text} is out of range")))
    }

    /// One or more decimal digits.
    fn digits(&mut self) -> Result<(), FilterError> {
        let end = self.scan(self.pos, |c| c.is_ascii_digit());
        if end == self.pos {
            return Err(self.error(self.pos, format!("expected a digit, found {}", self.describe(self.pos))));
        }
        self.pos = end;
        Ok(())
    }
}

/// The value of `text`, already checked to be JSON number syntax: an integer when it is one
/// that fits 64 bits, otherwise the nearest `f64`. Floats go through `str::parse`, which
/// rounds correctly, rather than `serde_json`, whose default float parsing can be off by an
/// ulp and would break `parse_filter(&f.to_string()) == Ok(f)`.
fn number_from_json(text: &str) -> Option<Number> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(u) = text.parse::<u64>() {
            return Some(u.into());
        }
        if let Ok(i) = text.parse::<i64>() {
            return Some(i.into());
        }
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

// ---------------------------------------------------------------------------------------
// Canonical text
// ---------------------------------------------------------------------------------------

impl fmt::Display for AttrPath {
    /// `[urn:]name[.sub]`, as written (the schema layer canonicalizes the spelling).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Filter {
    /// Canonical filter text: lower-case operators, single spaces, JSON string literals and
    /// only the parentheses the tree's shape needs, so that `parse_filter` gives the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_filter(f, self, Prec::Or)
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.filter_sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Binding strength, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    Or,
    And,
    Atom,
}

fn prec(filter: &Filter) -> Prec {
    match filter {
        Filter::Or(..) => Prec::Or,
        Filter::And(..) => Prec::And,
        _ => Prec::Atom,
    }
}

/// Writes `filter` where the context needs at least `min` binding strength. Both binary
/// operators associate to the left, so a right operand of the same kind needs parentheses.
fn write_filter(f: &mut fmt::Formatter<'_>, filter: &Filter, min: Prec) -> fmt::Result {
    if prec(filter) < min {
        f.write_char('(')?;
        write_filter(f, filter, Prec::Or)?;
        return f.write_char(')');
    }
    match filter {
        Filter::Or(l, r) => {
            write_filter(f, l, Prec::Or)?;
            f.write_str(" or ")?;
            write_filter(f, r, Prec::And)
        }
        Filter::And(l, r) => {
            write_filter(f, l, Prec::And)?;
            f.write_str(" and ")?;
            write_filter(f, r, Prec::Atom)
        }
        Filter::Not(inner) => {
            f.write_str("not (")?;
            write_filter(f, inner, Prec::Or)?;
            f.write_char(')')
        }
        Filter::Present(path) => write!(f, "{path} pr"),
        Filter::Compare(path, op, lit) => {
            write!(f, "{path} {} ", op_str(*op))?;
            write_literal(f, lit)
        }
        Filter::ValuePath(path, inner) => {
            write!(f, "{path}[")?;
            write_filter(f, inner, Prec::Or)?;
            f.write_char(']')
        }
    }
}

fn write_literal(f: &mut fmt::Formatter<'_>, lit: &Literal) -> fmt::Result {
    match lit {
        Literal::Null => f.write_str("null"),
        Literal::Bool(b) => write!(f, "{b}"),
        Literal::Number(n) => write!(f, "{n}"),
        Literal::String(s) => write_json_string(f, s),
    }
}

/// `s` as a JSON string literal (RFC 8259 §7): quotes, backslashes and control characters
/// escaped, everything else as is.
fn write_json_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{8}' => out.write_str("\\b")?,
            '\u{c}' => out.write_str("\\f")?,
            c if u32::from(c) < 0x20 => write!(out, "\\u{:04x}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

// ---------------------------------------------------------------------------------------
// In-memory evaluation
// ---------------------------------------------------------------------------------------

/// Whether `value` (a whole resource, or one element of a multi-valued attribute when
/// evaluating a value filter's inner filter) satisfies `filter`.
///
/// Semantics (RFC 7644 §3.4.2.2, RFC 7643 §2): attribute names match case-insensitively; a
/// path qualified with a core schema URN reads the top level, any other URN the object under
/// that URN key; a multi-valued attribute matches if any value does; a comparison with a
/// complex value (`emails co "x"`) compares its `value` sub-attribute. A comparison needs a
/// value: on an absent attribute every operator is false (as in SQL, and as `store` does),
/// except `eq null`, which means "not present", so `not (title eq "x")` is true for a user
/// without a title. Strings compare case-insensitively unless the resolved path says
/// `caseExact`; dateTime values compare as instants; IdPs' string booleans (`"True"`) and string
/// numbers compare with real ones.
pub fn matches(filter: &Filter, value: &Value) -> bool {
    match filter {
        Filter::And(a, b) => matches(a, value) && matches(b, value),
        Filter::Or(a, b) => matches(a, value) || matches(b, value),
        Filter::Not(inner) => !matches(inner, value),
        Filter::Present(path) => values_at(path, value).into_iter().any(is_present),
        Filter::Compare(path, op, lit) => compare_path(path, *op, lit, value),
        Filter::ValuePath(path, inner) => {
            values_at(path, value).into_iter().any(|element| element.is_object() && matches(inner, element))
        }
    }
}

const CORE_SCHEMAS: [&str; 2] =
    ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:core:2.0:Group"];

/// The member of `map` named `key`, ignoring ASCII case (RFC 7643 §2.1).
fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// A multi-valued attribute's values, or a single value on its own.
fn flatten(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Every value `path` names in `root`, with multi-valued attributes flattened.
fn values_at<'a>(path: &AttrPath, root: &'a Value) -> Vec<&'a Value> {
    let Some(object) = root.as_object() else { return Vec::new() };
    let base = match &path.urn {
        None => Some(object),
        Some(urn) if CORE_SCHEMAS.iter().any(|core| core.eq_ignore_ascii_case(urn)) => Some(object),
        Some(urn) => get_ci(object, urn).and_then(Value::as_object),
    };
    let Some(top) = base.and_then(|b| get_ci(b, &path.name)) else { return Vec::new() };
    let values = flatten(top);
    match &path.sub {
        None => values,
        Some(sub) => values
            .into_iter()
            .filter_map(Value::as_object)
            .filter_map(|element| get_ci(element, sub))
            .flat_map(flatten)
            .collect(),
    }
}

/// `pr`: present and not null, not an empty string, array or object.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// How the strings of one comparison compare.
#[derive(Clone, Copy)]
struct StrRules {
    case_exact: bool,
    /// Whether strings that both parse as RFC 3339 compare as instants: unless the schema
    /// says the attribute is something other than a dateTime.
    datetime: bool,
}

fn compare_path(path: &AttrPath, op: CompareOp, lit: &Literal, root: &Value) -> bool {
    let values = values_at(path, root);
    if let Literal::Null = lit {
        let present = values.iter().any(|v| is_present(v));
        return match op {
            CompareOp::Eq => !present,
            CompareOp::Ne => present,
            _ => false,
        };
    }
    let rules = StrRules {
        case_exact: path.info.resolved && path.info.case_exact,
        datetime: !path.info.resolved || path.info.ty == AttrType::DateTime,
    };
    values
        .into_iter()
        .flat_map(|v| match v {
            // A complex value stands for its `value` sub-attribute (`emails co "example.com"`).
            Value::Object(o) => get_ci(o, "value").map(flatten).unwrap_or_default(),
            other => vec![other],
        })
        .any(|v| compare_value(v, op, lit, rules))
}

fn compare_value(value: &Value, op: CompareOp, lit: &Literal, rules: StrRules) -> bool {
    if value.is_null() {
        return false;
    }
    match op {
        CompareOp::Eq => equals(value, lit, rules),
        CompareOp::Ne => !equals(value, lit, rules),
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
            let (Value::String(a), Literal::String(b)) = (value, lit) else { return false };
            let (a, b) = fold(a, b, rules);
            match op {
                CompareOp::Co => a.contains(b.as_str()),
                CompareOp::Sw => a.starts_with(b.as_str()),
                _ => a.ends_with(b.as_str()),
            }
        }
        CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
            let Some(ord) = order(value, lit, rules) else { return false };
            match op {
                CompareOp::Gt => ord == Ordering::Greater,
                CompareOp::Ge => ord != Ordering::Less,
                CompareOp::Lt => ord == Ordering::Less,
                _ => ord != Ordering::Greater,
            }
        }
    }
}

fn fold(a: &str, b: &str, rules: StrRules) -> (String, String) {
    if rules.case_exact { (a.to_owned(), b.to_owned()) } else { (a.to_lowercase(), b.to_lowercase()) }
}

fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A string attribute or literal that is a JSON number (`"42"`, not `"0042"` or `"NaN"`).
fn parse_number(s: &str) -> Option<Number> {
    let mut p = Parser::new(s.trim());
    let number = p.parse_number().ok()?;
    p.at_end().then_some(number)
}

fn parse_instant(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn equals(value: &Value, lit: &Literal, rules: StrRules) -> bool {
    match (value, lit) {
        (Value::Bool(a), Literal::Bool(b)) => a == b,
        (Value::Bool(a), Literal::String(b)) => parse_bool(b) == Some(*a),
        (Value::String(a), Literal::Bool(b)) => parse_bool(a) == Some(*b),
        (Value::String(_), Literal::String(_) | Literal::Number(_)) | (Value::Number(_), _) => {
            order(value, lit, rules) == Some(Ordering::Equal)
        }
        _ => false,
    }
}

/// How `value` orders against `lit`, when they are comparable: strings (as instants when
/// both are dateTimes) or numbers (a numeric string counts as a number against a number).
fn order(value: &Value, lit: &Literal, rules: StrRules) -> Option<Ordering> {
    match (value, lit) {
        (Value::String(a), Literal::String(b)) => {
            if rules.datetime
                && let (Some(x), Some(y)) = (parse_instant(a), parse_instant(b))
            {
                return Some(x.cmp(&y));
            }
            let (a, b) = fold(a, b, rules);
            Some(a.cmp(&b))
        }
        (Value::Number(a), Literal::Number(b)) => number_cmp(a, b),
        (Value::Number(a), Literal::String(b)) => number_cmp(a, &parse_number(b)?),
        (Value::String(a), Literal::Number(b)) => number_cmp(&parse_number(a)?, b),
        _ => None,
    }
}

/// Exact for integers, by `f64` otherwise.
fn number_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

    // --- AST builders -------------------------------------------------------------------

    fn p(name: &str) -> AttrPath {
        AttrPath { name: name.into(), ..Default::default() }
    }
    fn ps(name: &str, sub: &str) -> AttrPath {
        AttrPath { sub: Some(sub.into()), ..p(name) }
    }
    fn pu(urn: &str, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath { urn: Some(urn.into()), sub: sub.map(Into::into), ..p(name) }
    }
    fn s(v: &str) -> Literal {
        Literal::String(v.into())
    }
    fn n(v: i64) -> Literal {
        Literal::Number(v.into())
    }
    fn cmp(path: AttrPath, op: CompareOp, lit: Literal) -> Filter {
        Filter::Compare(path, op, lit)
    }
    fn eq(path: AttrPath, v: &str) -> Filter {
        cmp(path, CompareOp::Eq, s(v))
    }
    fn pr(path: AttrPath) -> Filter {
        Filter::Present(path)
    }
    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }
    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }
    fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }
    fn vp(path: AttrPath, inner: Filter) -> Filter {
        Filter::ValuePath(path, Box::new(inner))
    }

    /// Parses, and checks that the canonical text parses back to the same tree.
    fn parse_ok(input: &str) -> Filter {
        let f = parse_filter(input).unwrap_or_else(|e| panic!("{input:?} did not parse: {e}"));
        assert_eq!(parse_filter(&f.to_string()).as_ref(), Ok(&f), "round trip of {input:?} via {f}");
        f
    }

    fn path_ok(input: &str) -> PatchPath {
        let path = parse_path(input).unwrap_or_else(|e| panic!("{input:?} did not parse: {e}"));
        assert_eq!(parse_path(&path.to_string()).as_ref(), Ok(&path), "round trip of {input:?} via {path}");
        path
    }

    // --- RFC 7644 §3.4.2.2 examples -----------------------------------------------------

    #[test]
    fn rfc_filter_examples() {
        use CompareOp::*;
        let example_com = || cmp(p("emails"), Co, s("example.com"));
        let example_org = || cmp(ps("emails", "value"), Co, s("example.org"));
        let cases: Vec<(&str, Filter)> = vec![
            (r#"userName eq "bjensen""#, eq(p("userName"), "bjensen")),
            (r#"name.familyName co "O'Malley""#, cmp(ps("name", "familyName"), Co, s("O'Malley"))),
            (r#"userName sw "J""#, cmp(p("userName"), Sw, s("J"))),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
                cmp(pu(CORE_USER, "userName", None), Sw, s("J")),
            ),
            ("title pr", pr(p("title"))),
            (
                r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
                cmp(ps("meta", "lastModified"), Gt, s("2011-05-13T04:42:34Z")),
            ),
            (
                r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
                cmp(ps("meta", "lastModified"), Ge, s("2011-05-13T04:42:34Z")),
            ),
            (
                r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
                cmp(ps("meta", "lastModified"), Lt, s("2011-05-13T04:42:34Z")),
            ),
            (
                r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
                cmp(ps("meta", "lastModified"), Le, s("2011-05-13T04:42:34Z")),
            ),
            (r#"title pr and userType eq "Employee""#, and(pr(p("title")), eq(p("userType"), "Employee"))),
            (r#"title pr or userType eq "Intern""#, or(pr(p("title")), eq(p("userType"), "Intern"))),
            (
                r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
                eq(p("schemas"), ENTERPRISE),
            ),
            (
                r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
                and(eq(p("userType"), "Employee"), or(example_com(), example_org())),
            ),
            (
                r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
                and(cmp(p("userType"), Ne, s("Employee")), not(or(example_com(), example_org()))),
            ),
            (
                r#"userType eq "Employee" and (emails.type eq "work")"#,
                and(eq(p("userType"), "Employee"), eq(ps("emails", "type"), "work")),
            ),
            (
                r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
                and(
                    eq(p("userType"), "Employee"),
                    vp(p("emails"), and(eq(p("type"), "work"), cmp(p("value"), Co, s("@example.com")))),
                ),
            ),
            (
                r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
                or(
                    vp(p("emails"), and(eq(p("type"), "work"), cmp(p("value"), Co, s("@example.com")))),
                    vp(p("ims"), and(eq(p("type"), "xmpp"), cmp(p("value"), Co, s("@foo.com")))),
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_ok(input), want, "{input}");
        }
    }

    #[test]
    fn real_idp_filters() {
        let cases: Vec<(&str, Filter)> = vec![
            (r#"userName eq "test.user@example.com""#, eq(p("userName"), "test.user@example.com")),
            (
                r#"externalId eq "5f0e4d3c-1c8b-4b6e-9a53-2f1f0b7c9e11""#,
                eq(p("externalId"), "5f0e4d3c-1c8b-4b6e-9a53-2f1f0b7c9e11"),
            ),
            (r#"displayName eq "Group""#, eq(p("displayName"), "Group")),
            (r#"id eq "g" and members[value eq "u"]"#, and(eq(p("id"), "g"), vp(p("members"), eq(p("value"), "u")))),
            (r#"members[value eq "u"]"#, vp(p("members"), eq(p("value"), "u"))),
            (r#"active eq true"#, cmp(p("active"), CompareOp::Eq, Literal::Bool(true))),
            (
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "42""#,
                eq(pu(ENTERPRISE, "employeeNumber", None), "42"),
            ),
            (
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m1""#,
                eq(pu(ENTERPRISE, "manager", Some("value")), "m1"),
            ),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName eq "Jensen""#,
                eq(pu(CORE_USER, "name", Some("familyName")), "Jensen"),
            ),
            (r#"members.$ref pr"#, pr(ps("members", "$ref"))),
            (r#"$ref pr"#, pr(p("$ref"))),
            (r#"emails[not (type eq "work")]"#, vp(p("emails"), not(eq(p("type"), "work")))),
            // Entra's matching filter on `emails[type eq "work"].value` (issue #13).
            (
                r#"emails[type eq "work"].value eq "a@b.example""#,
                vp(p("emails"), and(eq(p("type"), "work"), eq(p("value"), "a@b.example"))),
            ),
            (
                r#"emails[type eq "work" or primary eq true].VALUE  EW "@b.example" and userName pr"#,
                and(
                    vp(
                        p("emails"),
                        and(
                            or(eq(p("type"), "work"), cmp(p("primary"), CompareOp::Eq, Literal::Bool(true))),
                            cmp(p("VALUE"), CompareOp::Ew, s("@b.example")),
                        ),
                    ),
                    pr(p("userName")),
                ),
            ),
            (r#"emails[type eq "work"].display pr"#, vp(p("emails"), and(eq(p("type"), "work"), pr(p("display"))))),
            (
                r#"emails[type eq "work" or (type eq "home" and value ew "@example.com")]"#,
                vp(
                    p("emails"),
                    or(
                        eq(p("type"), "work"),
                        and(eq(p("type"), "home"), cmp(p("value"), CompareOp::Ew, s("@example.com"))),
                    ),
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_ok(input), want, "{input}");
        }
    }

    #[test]
    fn keywords_are_case_insensitive_and_whitespace_lenient() {
        let want = and(eq(p("userName"), "a"), not(or(pr(p("title")), cmp(p("age"), CompareOp::Ge, n(3)))));
        for input in [
            r#"userName eq "a" and not (title pr or age ge 3)"#,
            r#"userName EQ "a" AND NOT (title PR OR age GE 3)"#,
            r#"userName Eq "a" And Not(title pR Or age gE 3)"#,
            "  userName \t eq\t\"a\"   and\nnot   (  title  pr  or  age   ge   3  )  ",
            r#"(userName eq "a") and (not ((title pr) or (age ge 3)))"#,
        ] {
            assert_eq!(parse_ok(input), want, "{input}");
        }
        assert_eq!(parse_ok("active eq TRUE"), cmp(p("active"), CompareOp::Eq, Literal::Bool(true)));
        assert_eq!(parse_ok("active ne False"), cmp(p("active"), CompareOp::Ne, Literal::Bool(false)));
        assert_eq!(parse_ok("title eq NULL"), cmp(p("title"), CompareOp::Eq, Literal::Null));
        assert_eq!(parse_ok(r#"emails [ type eq "work" ]"#), vp(p("emails"), eq(p("type"), "work")));
    }

    #[test]
    fn precedence_and_associativity() {
        let (a, b, c, d) = (|| pr(p("a")), || pr(p("b")), || pr(p("c")), || pr(p("d")));
        assert_eq!(parse_ok("a pr or b pr and c pr"), or(a(), and(b(), c())));
        assert_eq!(parse_ok("a pr and b pr or c pr"), or(and(a(), b()), c()));
        assert_eq!(parse_ok("a pr and b pr and c pr"), and(and(a(), b()), c()));
        assert_eq!(parse_ok("a pr or b pr or c pr"), or(or(a(), b()), c()));
        assert_eq!(parse_ok("a pr and (b pr and c pr)"), and(a(), and(b(), c())));
        assert_eq!(parse_ok("not (a pr) and b pr"), and(not(a()), b()));
        assert_eq!(parse_ok("a pr or b pr and c pr or d pr"), or(or(a(), and(b(), c())), d()));
    }

    #[test]
    fn keywords_as_attribute_names() {
        // ATTRNAME does not exclude keywords; position decides.
        assert_eq!(parse_ok(r#"not eq "x""#), eq(p("not"), "x"));
        assert_eq!(parse_ok("not pr and and pr or or pr"), or(and(pr(p("not")), pr(p("and"))), pr(p("or"))));
        assert_eq!(parse_ok("pr pr"), pr(p("pr")));
        assert_eq!(parse_ok(r#"not.sub eq "x""#), eq(ps("not", "sub"), "x"));
        assert_eq!(parse_ok(r#"not[value eq "x"]"#), vp(p("not"), eq(p("value"), "x")));
        assert_eq!(parse_ok("not (not pr)"), not(pr(p("not"))));
        assert_eq!(parse_ok(r#"eq eq "eq""#), eq(p("eq"), "eq"));
        assert!(parse_filter("eq eq eq").is_err());
    }

    #[test]
    fn literals() {
        use CompareOp::Eq;
        let lit = |input: &str| match parse_ok(input) {
            Filter::Compare(_, _, l) => l,
            other => panic!("{other:?}"),
        };
        assert_eq!(lit("x eq 0"), n(0));
        assert_eq!(lit("x eq -12"), n(-12));
        assert_eq!(lit("x eq 18446744073709551615"), Literal::Number(u64::MAX.into()));
        assert_eq!(lit("x eq 1.5"), Literal::Number(Number::from_f64(1.5).unwrap()));
        assert_eq!(lit("x eq -2.5E+3"), Literal::Number(Number::from_f64(-2500.0).unwrap()));
        assert_eq!(lit("x eq 1e-2"), Literal::Number(Number::from_f64(0.01).unwrap()));
        assert_eq!(lit(r#"x eq "a\"b\\c\/d\b\f\n\r\t""#), s("a\"b\\c/d\u{8}\u{c}\n\r\t"));
        assert_eq!(lit(r#"x eq "\u00e9\u00E9""#), s("éé"));
        assert_eq!(lit(r#"x eq "\ud83d\ude00""#), s("😀"));
        assert_eq!(lit(r#"x eq "raw é 😀 ]) and""#), s("raw é 😀 ]) and"));
        assert_eq!(lit(r#"x eq """#), s(""));
        // Beyond 64 bits an integer becomes the nearest float, as in serde_json.
        assert_eq!(
            lit("x eq 18446744073709551616"),
            Literal::Number(Number::from_f64(18446744073709551616.0).unwrap())
        );
        // Floats parse correctly rounded, so canonical text round-trips exactly.
        assert_eq!(
            lit("x eq 1.0280268808302409e+187"),
            Literal::Number(Number::from_f64(1.0280268808302409e187).unwrap())
        );
        assert_eq!(
            lit("x eq -2.67258126359237e-15"),
            Literal::Number(Number::from_f64(-2.67258126359237e-15).unwrap())
        );
        assert_eq!(parse_ok(r#"x eq"y""#), cmp(p("x"), Eq, s("y")));
    }

    #[test]
    fn canonical_text() {
        let cases = [
            (r#"userName EQ "bjensen""#, r#"userName eq "bjensen""#),
            (
                r#"userType eq "Employee" and (emails.type eq "work")"#,
                r#"userType eq "Employee" and emails.type eq "work""#,
            ),
            ("a pr and (b pr and c pr)", "a pr and (b pr and c pr)"),
            ("(a pr and b pr) and c pr", "a pr and b pr and c pr"),
            ("(a pr or b pr) and c pr", "(a pr or b pr) and c pr"),
            ("a pr or (b pr or c pr)", "a pr or (b pr or c pr)"),
            ("a pr or (b pr and c pr)", "a pr or b pr and c pr"),
            ("NOT(a pr)", "not (a pr)"),
            ("x eq \"tab\tquote\\\" nl\\n ctl\u{1}\"", r#"x eq "tab\tquote\" nl\n ctl\u0001""#),
            ("x eq 1.50", "x eq 1.5"),
            ("x eq 1E3", "x eq 1000.0"),
            ("x eq TRUE", "x eq true"),
            (r#"emails[ type eq "work" ]"#, r#"emails[type eq "work"]"#),
        ];
        for (input, want) in cases {
            assert_eq!(parse_ok(input).to_string(), want, "{input}");
        }
        let path = pu(ENTERPRISE, "manager", Some("value"));
        assert_eq!(path.to_string(), format!("{ENTERPRISE}:manager.value"));
    }

    // --- RFC 7644 §3.5.2 PATCH paths ----------------------------------------------------

    #[test]
    fn rfc_patch_path_examples() {
        const ID: &str = "2819c223-7f76-453a-919d-413861904646";
        let attr = |a: AttrPath| PatchPath { attr: a, filter: None, filter_sub: None };
        let filtered = |a: AttrPath, f: Filter, sub: Option<&str>| PatchPath {
            attr: a,
            filter: Some(f),
            filter_sub: sub.map(Into::into),
        };
        let cases: Vec<(String, PatchPath)> = vec![
            // §3.5.2 figure 8
            ("members".into(), attr(p("members"))),
            ("name.familyName".into(), attr(ps("name", "familyName"))),
            (r#"addresses[type eq "work"]"#.into(), filtered(p("addresses"), eq(p("type"), "work"), None)),
            (format!(r#"members[value eq "{ID}"]"#), filtered(p("members"), eq(p("value"), ID), None)),
            (
                format!(r#"members[value eq "{ID}"].displayName"#),
                filtered(p("members"), eq(p("value"), ID), Some("displayName")),
            ),
            // §3.5.2.2 remove
            (
                r#"emails[type eq "work" and value ew "example.com"]"#.into(),
                filtered(
                    p("emails"),
                    and(eq(p("type"), "work"), cmp(p("value"), CompareOp::Ew, s("example.com"))),
                    None,
                ),
            ),
            // §3.5.2.3 replace
            (
                r#"addresses[type eq "work"].streetAddress"#.into(),
                filtered(p("addresses"), eq(p("type"), "work"), Some("streetAddress")),
            ),
            (r#"emails[type eq "work"].value"#.into(), filtered(p("emails"), eq(p("type"), "work"), Some("value"))),
            // Entra and Okta
            (format!("{ENTERPRISE}:manager"), attr(pu(ENTERPRISE, "manager", None))),
            (format!("{ENTERPRISE}:manager.value"), attr(pu(ENTERPRISE, "manager", Some("value")))),
            (format!("{ENTERPRISE}:department"), attr(pu(ENTERPRISE, "department", None))),
            (format!("{CORE_USER}:name.givenName"), attr(pu(CORE_USER, "name", Some("givenName")))),
            (r#"members[value eq "abc"]"#.into(), filtered(p("members"), eq(p("value"), "abc"), None)),
            ("  members \t".into(), attr(p("members"))),
            ("active".into(), attr(p("active"))),
            ("members.$ref".into(), attr(ps("members", "$ref"))),
            (r#"members[value eq "a"].$ref"#.into(), filtered(p("members"), eq(p("value"), "a"), Some("$ref"))),
        ];
        for (input, want) in cases {
            assert_eq!(path_ok(&input), want, "{input}");
        }
        assert_eq!(path_ok(r#"  emails [ type  EQ "work" ].value "#).to_string(), r#"emails[type eq "work"].value"#);
    }

    // --- errors -------------------------------------------------------------------------

    #[test]
    fn filter_errors_name_the_column() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty filter"),
            ("   ", 3, "empty filter"),
            (r#"userName eqq "x""#, 9, r#"expected a comparison operator or "pr" after "userName", found "eqq""#),
            (r#"userName="x""#, 8, r#"after "userName", found "=""#),
            ("userName", 8, "found end of input"),
            ("userName eq", 11, r#"expected a value after "eq""#),
            ("userName eq bjensen", 12, "strings must be in double quotes"),
            ("userName eq 'bjensen'", 12, "expected a value"),
            (r#"userName eq "bjensen"#, 12, "never closed"),
            (r#"userName eq "a" and"#, 19, r#"expected an attribute path, "(" or "not", found end of input"#),
            (r#"userName eq "a" xor b pr"#, 16, r#"expected "and", "or" or the end of the filter, found "xor""#),
            (r#"userName eq "a" "b""#, 16, "expected \"and\", \"or\" or the end of the filter, found \"\\\"\""),
            ("(userName pr", 12, r#"closing the "(" at column 0"#),
            ("userName pr)", 11, r#"unmatched ")""#),
            ("userName pr]", 11, r#"unmatched "]""#),
            ("()", 1, "empty parentheses"),
            ("emails[]", 7, "empty value filter"),
            (r#"emails[type eq "work""#, 21, r#"closing the "[" at column 6"#),
            (r#"emails[type eq "work"].value.x eq "x""#, 28, "name one sub-attribute"),
            (r#"emails[type eq "work"].urn:x:value eq "x""#, 26, "name one sub-attribute"),
            (r#"emails[type eq "work"]. eq "x""#, 23, "expected a sub-attribute name after \"].\""),
            (r#"emails[type eq "work"].value"#, 28, r#"after "emails[...].value", found end of input"#),
            (r#"emails[type eq "work"].value ex "x""#, 29, "expected a comparison operator"),
            (r#"emails[type eq "work"].value eq"#, 31, "expected a value"),
            (r#"emails[type[value eq "x"]]"#, 11, "cannot be nested"),
            (r#"emails[urn:x:type eq "a"]"#, 10, "no schema URN"),
            (r#"emails[type.x eq "a"]"#, 11, "no schema URN and no \".\""),
            (r#"name.givenName.x eq "a""#, 14, "at most one sub-attribute"),
            (r#"name. eq "a""#, 5, "expected a sub-attribute name"),
            (r#"urn::x eq 1"#, 4, "empty segment"),
            (r#"urn:x: eq 1"#, 6, "attribute name after the schema URN"),
            (r#"user$name eq 1"#, 4, "unexpected \"$\""),
            (r#"$refs eq 1"#, 0, "\"$ref\""),
            (r#"1abc eq 2"#, 0, "expected an attribute path"),
            (r#"-x eq 2"#, 0, "expected an attribute path"),
            (r#"userName eq "\q""#, 12 + 1, "invalid escape"),
            (r#"userName eq "\ud83d""#, 13, "high surrogate"),
            (r#"userName eq "\ude00""#, 13, "low surrogate"),
            (r#"userName eq "\u12g4""#, 17, "four hex digits"),
            ("x eq 01", 5, "malformed number"),
            ("x eq 1.", 7, "expected a digit"),
            ("x eq 1e", 7, "expected a digit"),
            ("x eq -", 6, "expected a digit"),
            ("x eq 12abc", 5, "malformed number \"12abc\""),
            ("x eq 1e999", 5, "out of range"),
            ("x eq truex", 5, "expected a value"),
            ("not x pr", 4, r#"expected "(" after "not", found "x""#),
            ("not", 3, r#"expected "(" after "not", found end of input"#),
            ("not (x pr", 9, r#"closing the "(" at column 4"#),
            ("x pr and not (y pr) z", 20, "found \"z\""),
            ("élan eq 1", 0, "expected an attribute path, \"(\" or \"not\", found \"é\""),
            ("x eq \"é\" é", 9, "found \"é\""),
        ];
        for &(input, position, message) in cases {
            let err = parse_filter(input).expect_err(input);
            assert_eq!(err.position, position, "{input:?}: {err}");
            assert!(err.message.contains(message), "{input:?}: {err} does not contain {message:?}");
        }
    }

    #[test]
    fn path_errors_name_the_column() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty path"),
            ("  ", 2, "empty path"),
            ("[x eq 1]", 0, "expected an attribute path"),
            ("name givenName", 5, "expected the end of the path, found \"givenName\""),
            (r#"members[value eq "x"].display.x"#, 29, "only one sub-attribute"),
            (r#"members[value eq "x"]x"#, 21, "expected the end of the path"),
            (r#"members[value eq "x""#, 20, r#"closing the "[" at column 7"#),
            (r#"emails[type eq "work"]."#, 23, "expected a sub-attribute name"),
            (r#"emails[type eq "work"].1"#, 23, "must start with a letter"),
            ("name.given.x", 10, "at most one sub-attribute"),
            (r#"emails[type eq "work"][value pr]"#, 22, "expected the end of the path"),
            ("emails pr", 7, "expected the end of the path"),
        ];
        for &(input, position, message) in cases {
            let err = parse_path(input).expect_err(input);
            assert_eq!(err.position, position, "{input:?}: {err}");
            assert!(err.message.contains(message), "{input:?}: {err} does not contain {message:?}");
        }
    }

    #[test]
    fn error_display_and_scim_mapping() {
        let err = parse_filter(r#"userName eqq "x""#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"at column 9: expected a comparison operator or "pr" after "userName", found "eqq""#
        );
        let scim: ScimError = err.clone().into();
        assert_eq!(scim.status, 400);
        assert_eq!(scim.scim_type, Some(crate::scim::error::ScimType::InvalidFilter));
        assert!(scim.detail.contains("at column 9"), "{}", scim.detail);
        let scim = err.into_path_error();
        assert_eq!(scim.scim_type, Some(crate::scim::error::ScimType::InvalidPath));
        assert!(scim.detail.starts_with("invalid path at column 9"), "{}", scim.detail);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let err = parse_filter(r#"x eq "ééé" y"#).unwrap_err();
        assert_eq!(err.position, 11);
    }

    #[test]
    fn long_tokens_are_shortened_in_messages() {
        let input = format!("x {} 1", "q".repeat(1000));
        let err = parse_filter(&input).unwrap_err();
        assert!(err.message.len() < 200, "{}", err.message);
        assert!(err.message.contains('…'));
    }

    // --- limits -------------------------------------------------------------------------

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let many = 10_000;
        for input in [
            "(".repeat(many),
            format!("{}x pr{}", "(".repeat(many), ")".repeat(many)),
            "not (".repeat(many),
            format!("{}x pr{}", "not (".repeat(many), ")".repeat(many)),
            "x[".repeat(many),
            format!("x[{}y pr{}]", "(".repeat(many), ")".repeat(many)),
            "[".repeat(many),
        ] {
            let err = parse_filter(&input).expect_err("nested too deep");
            assert!(err.position < 5 * (MAX_NESTING + 2), "{err}");
            assert!(parse_path(&input).is_err());
        }
        let err = parse_filter(&"(".repeat(many)).unwrap_err();
        assert_eq!(err.position, MAX_NESTING);
        assert!(err.message.contains("nests deeper than 64"), "{err}");
    }

    #[test]
    fn nesting_up_to_the_limit_parses_on_a_small_stack() {
        let input = format!("{}x pr{}", "not (".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        let worker = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let f = parse_filter(&input).map_err(|e| e.to_string())?;
                let text = f.to_string();
                let again = parse_filter(&text).map_err(|e| e.to_string())?;
                // An even number of `not`s around a true term.
                Ok::<bool, String>(again == f && matches(&f, &json!({"x": 1})))
            })
            .expect("spawn");
        assert_eq!(worker.join().expect("no overflow"), Ok(true));
        let too_deep = format!("{}x pr{}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
        assert!(parse_filter(&too_deep).is_err());
    }

    #[test]
    fn term_count_is_bounded() {
        let chain = |k: usize| vec!["x pr"; k].join(" and ");
        assert!(parse_filter(&chain(MAX_TERMS)).is_ok());
        let err = parse_filter(&chain(10_000)).unwrap_err();
        assert!(err.message.contains("more than 256 comparisons"), "{err}");
        assert_eq!(err.position, MAX_TERMS * "x pr and ".len());
    }

    // --- evaluation ---------------------------------------------------------------------

    fn bjensen() -> Value {
        json!({
            "schemas": [CORE_USER, ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen",
            "userName": "Bjensen@Example.com",
            "name": {"familyName": "O'Malley", "givenName": "Barbara"},
            "userType": "Employee",
            "title": "Tour Guide",
            "nickName": "",
            "active": true,
            "loginCount": 42,
            "ratio": 0.75,
            "employeeCode": "42",
            "badgeCode": "0042",
            "legacyFlag": "True",
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "ims": [{"value": "babs@foo.com", "type": "xmpp"}],
            "phoneNumbers": [],
            "nicknames": ["Babs", "BJ"],
            "meta": {"lastModified": "2011-05-13T04:42:34Z", "created": "2010-01-23T04:56:22.000Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {
                "employeeNumber": "701984",
                "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
            }
        })
    }

    fn check(cases: &[(&str, bool)]) {
        let user = bjensen();
        for &(input, want) in cases {
            let f = parse_ok(input);
            assert_eq!(matches(&f, &user), want, "{input}");
        }
    }

    #[test]
    fn evaluates_rfc_examples() {
        check(&[
            (r#"userName eq "bjensen@example.com""#, true),
            (r#"name.familyName co "o'malley""#, true),
            (r#"userName sw "B""#, true),
            (r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bjensen""#, true),
            ("title pr", true),
            (r#"meta.lastModified gt "2011-05-13T04:42:34Z""#, false),
            (r#"meta.lastModified ge "2011-05-13T04:42:34Z""#, true),
            (r#"meta.lastModified lt "2011-05-13T04:42:35Z""#, true),
            (r#"meta.lastModified le "2011-05-13T04:42:33Z""#, false),
            (r#"title pr and userType eq "Employee""#, true),
            (r#"title pr or userType eq "Intern""#, true),
            (r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#, true),
            (r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#, true),
            (r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#, false),
            (r#"userType eq "Employee" and (emails.type eq "work")"#, true),
            (r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#, true),
            (r#"emails[type eq "work" and value co "@jensen.org"]"#, false),
            (
                r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
                true,
            ),
        ]);
    }

    #[test]
    fn evaluates_names_and_strings_case_insensitively() {
        check(&[
            (r#"USERNAME eq "BJENSEN@EXAMPLE.COM""#, true),
            (r#"Name.FamilyName eq "O'MALLEY""#, true),
            (r#"userName ew "EXAMPLE.COM""#, true),
            (r#"userName co "jensen@""#, true),
            (r#"userName co "nobody""#, false),
            (r#"title gt "tour""#, true),
            (r#"title lt "a""#, false),
            (r#"URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:employeeNumber eq "701984""#, true),
            (r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName sw "john""#, true),
            (r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager pr"#, true),
            (r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:userName pr"#, false),
            (r#"urn:example:other:1.0:Thing:employeeNumber pr"#, false),
        ]);
    }

    #[test]
    fn case_exact_paths_compare_exactly() {
        let user = bjensen();
        let mut f = parse_ok(r#"userName eq "bjensen@example.com""#);
        if let Filter::Compare(path, _, _) = &mut f {
            path.info.resolved = true;
            path.info.case_exact = true;
        }
        assert!(!matches(&f, &user));
        let mut f = parse_ok(r#"userName eq "Bjensen@Example.com""#);
        if let Filter::Compare(path, _, _) = &mut f {
            path.info = crate::model::query::AttrInfo { resolved: true, case_exact: true, ..Default::default() };
        }
        assert!(matches(&f, &user));
    }

    #[test]
    fn evaluates_multi_valued_attributes() {
        check(&[
            (r#"emails.value eq "babs@jensen.org""#, true),
            (r#"emails.type eq "home""#, true),
            (r#"emails.type eq "other""#, false),
            (r#"emails.type ne "work""#, true),
            (r#"emails eq "BJENSEN@example.com""#, true),
            (r#"emails.primary eq true"#, true),
            (r#"emails[primary eq true and type eq "home"]"#, false),
            (r#"emails[not (type eq "work")]"#, true),
            (r#"emails[type eq "home" or (type eq "work" and value ew "@example.com")]"#, true),
            (r#"nicknames eq "bj""#, true),
            (r#"nicknames sw "ba""#, true),
            (r#"nicknames eq "Barbara""#, false),
            ("phoneNumbers pr", false),
            ("emails pr", true),
            ("emails.display pr", false),
            (r#"phoneNumbers[type eq "work"]"#, false),
            (r#"name[givenName eq "barbara"]"#, true),
            (r#"nicknames[value eq "BJ"]"#, false),
        ]);
    }

    #[test]
    fn evaluates_presence_and_null() {
        check(&[
            ("nickName pr", false),
            ("title pr", true),
            ("missing pr", false),
            ("name pr", true),
            ("active pr", true),
            ("missing eq null", true),
            ("nickName eq null", true),
            ("title eq null", false),
            ("title ne null", true),
            ("missing ne null", false),
            ("title gt null", false),
            // A comparison needs a value; `not` of one on an absent attribute is true.
            (r#"missing eq "x""#, false),
            (r#"missing ne "x""#, false),
            (r#"not (missing eq "x")"#, true),
            (r#"title ne "x""#, true),
        ]);
    }

    #[test]
    fn evaluates_types_and_coercions() {
        check(&[
            ("active eq true", true),
            ("active eq false", false),
            ("active ne false", true),
            (r#"active eq "True""#, true),
            (r#"active eq "TRUE""#, true),
            (r#"active eq "false""#, false),
            (r#"active eq "yes""#, false),
            ("active gt false", false),
            (r#"active co "t""#, false),
            ("legacyFlag eq true", true),
            ("loginCount eq 42", true),
            ("loginCount eq 42.0", true),
            ("loginCount gt 41.5", true),
            ("loginCount le 41", false),
            (r#"loginCount eq "42""#, true),
            (r#"loginCount lt "100""#, true),
            (r#"loginCount co "4""#, false),
            ("ratio lt 1", true),
            ("ratio ge 0.75", true),
            ("employeeCode eq 42", true),
            ("employeeCode gt 41", true),
            (r#"employeeCode eq "42""#, true),
            (r#"employeeCode eq "042""#, false),
            // Only JSON number syntax coerces: leading zeros are significant in a code.
            ("badgeCode eq 42", false),
            (r#"badgeCode eq "0042""#, true),
            (r#"title eq 42"#, false),
            (r#"loginCount eq true"#, false),
            (r#"name eq "x""#, false),
            (r#"meta.created eq "2010-01-23T04:56:22Z""#, true),
            (r#"meta.created eq "2010-01-23T06:56:22+02:00""#, true),
            (r#"meta.created gt "2010-01-23T04:56:21.999Z""#, true),
            (r#"meta.created lt "2009-12-31T23:59:59Z""#, false),
        ]);
    }

    #[test]
    fn datetime_rules_follow_the_resolved_type() {
        let user = json!({"created": "2010-01-23T04:56:22.000Z", "code": "2010-01-23T04:56:22.000Z"});
        let mut f = parse_ok(r#"code eq "2010-01-23T04:56:22Z""#);
        assert!(matches(&f, &user), "unresolved: both parse, so instants");
        if let Filter::Compare(path, _, _) = &mut f {
            path.info = crate::model::query::AttrInfo { resolved: true, ty: AttrType::String, ..Default::default() };
        }
        assert!(!matches(&f, &user), "a resolved string attribute compares as a string");
        let mut f = parse_ok(r#"created gt "2010-01-23T04:56:21Z""#);
        if let Filter::Compare(path, _, _) = &mut f {
            path.info = crate::model::query::AttrInfo { resolved: true, ty: AttrType::DateTime, ..Default::default() };
        }
        assert!(matches(&f, &user));
    }

    #[test]
    fn evaluates_group_members() {
        let group = json!({
            "id": "g",
            "displayName": "Group",
            "members": [{"value": "u1", "type": "User"}, {"value": "u2", "display": "Babs"}]
        });
        for (input, want) in [
            (r#"id eq "g" and members[value eq "u2"]"#, true),
            (r#"members[value eq "u3"]"#, false),
            (r#"members.value eq "u1""#, true),
            (r#"members eq "u1""#, true),
            (r#"displayName eq "group""#, true),
        ] {
            assert_eq!(matches(&parse_ok(input), &group), want, "{input}");
        }
        // A value filter's inner filter evaluates against one element.
        let inner = parse_ok(r#"value eq "u2" and display co "ab""#);
        assert!(matches(&inner, &group["members"][1]));
        assert!(!matches(&inner, &group["members"][0]));
        assert!(!matches(&inner, &json!("u2")));
    }

    // --- properties ---------------------------------------------------------------------

    const URNS: &[&str] =
        &[ENTERPRISE, CORE_USER, "urn:ietf:params:scim:schemas:core:2.0:Group", "urn:example:x-y_z:1.0", "not:and"];

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "[a-zA-Z][a-zA-Z0-9_-]{0,7}",
            1 => Just("$ref".to_owned()),
            1 => prop::sample::select(vec!["not", "and", "or", "pr", "eq", "true", "null", "NOT", "Or", "Pr"])
                .prop_map(str::to_owned),
        ]
    }

    fn arb_resource_path() -> BoxedStrategy<AttrPath> {
        (prop::option::weighted(0.3, prop::sample::select(URNS)), arb_name(), prop::option::weighted(0.4, arb_name()))
            .prop_map(|(urn, name, sub)| AttrPath { urn: urn.map(str::to_owned), name, sub, info: Default::default() })
            .boxed()
    }

    fn arb_element_path() -> BoxedStrategy<AttrPath> {
        arb_name().prop_map(|name| AttrPath { name, ..Default::default() }).boxed()
    }

    fn arb_literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            Just(Literal::Null),
            any::<bool>().prop_map(Literal::Bool),
            any::<i64>().prop_map(|v| Literal::Number(v.into())),
            any::<u64>().prop_map(|v| Literal::Number(v.into())),
            any::<f64>().prop_filter_map("finite", Number::from_f64).prop_map(Literal::Number),
            any::<String>().prop_map(Literal::String),
            "[a-z \"\\\\\\]\\[()]{0,8}".prop_map(Literal::String),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        prop::sample::select(OPERATORS.iter().map(|&(_, op)| op).collect::<Vec<_>>())
    }

    fn arb_atom(path: BoxedStrategy<AttrPath>) -> impl Strategy<Value = Filter> {
        prop_oneof![
            1 => path.clone().prop_map(Filter::Present),
            3 => (path, arb_op(), arb_literal()).prop_map(|(p, op, l)| Filter::Compare(p, op, l)),
        ]
    }

    fn combine(leaf: impl Strategy<Value = Filter> + 'static, depth: u32, size: u32) -> impl Strategy<Value = Filter> {
        leaf.prop_recursive(depth, size, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| or(a, b)),
                inner.prop_map(not),
            ]
        })
    }

    fn arb_element_filter() -> impl Strategy<Value = Filter> {
        combine(arb_atom(arb_element_path()), 3, 8)
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        let leaf = prop_oneof![
            3 => arb_atom(arb_resource_path()),
            1 => (arb_resource_path(), arb_element_filter()).prop_map(|(p, f)| vp(p, f)),
        ];
        combine(leaf, 5, 24)
    }

    fn arb_patch_path() -> impl Strategy<Value = PatchPath> {
        (arb_resource_path(), prop::option::weighted(0.6, (arb_element_filter(), prop::option::of(arb_name()))))
            .prop_map(|(attr, filtered)| match filtered {
                None => PatchPath { attr, filter: None, filter_sub: None },
                Some((f, sub)) => PatchPath { attr, filter: Some(f), filter_sub: sub },
            })
    }

    /// Pieces of filter syntax, valid and not, to glue into near-miss inputs.
    const TOKENS: &[&str] = &[
        "userName",
        "emails",
        "name.givenName",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:",
        "manager.value",
        "$ref",
        "$",
        "eq",
        "EQ",
        "ne",
        "co",
        "sw",
        "ew",
        "gt",
        "ge",
        "lt",
        "le",
        "pr",
        "and",
        "or",
        "not",
        "NOT",
        "(",
        ")",
        "[",
        "]",
        ".",
        ":",
        "\"",
        "\"work\"",
        "\"a\\\"b\"",
        "\\",
        "\\u",
        "\\ud83d",
        "\\udc00",
        "\\u00e9",
        "12",
        "-",
        "-0.5e+3",
        "1e999",
        "0",
        "01",
        "true",
        "False",
        "null",
        " ",
        "  ",
        "\t",
        "\n",
        "é",
        "\u{0}",
        "💥",
        "'x'",
        ",",
        "emails[type eq \"work\"]",
        ".value",
        "].value eq ",
        "emails[type eq \"work\"].value eq \"a@b.example\"",
        "members[value eq \"a\"]",
        "x pr",
        "not (",
        "))",
        "[[",
    ];

    fn arb_soup() -> impl Strategy<Value = String> {
        prop::collection::vec((prop::sample::select(TOKENS), any::<bool>()), 0..24).prop_map(|parts| {
            parts.into_iter().map(|(t, space)| if space { format!("{t} ") } else { t.to_owned() }).collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn display_parses_back_to_the_same_filter(f in arb_filter()) {
            let text = f.to_string();
            prop_assert_eq!(parse_filter(&text), Ok(f), "text: {}", text);
        }

        #[test]
        fn display_parses_back_to_the_same_path(path in arb_patch_path()) {
            let text = path.to_string();
            prop_assert_eq!(parse_path(&text), Ok(path), "text: {}", text);
        }

        /// Entra's `attr[f].sub op v` (issue #13) is `attr[f and sub op v]`, wherever it
        /// stands in a filter.
        #[test]
        fn value_path_then_sub_attribute_is_one_more_element_condition(
            path in arb_resource_path(),
            f in arb_element_filter(),
            last in arb_atom(arb_element_path()),
            rest in arb_filter(),
        ) {
            let text = format!("{path}[{f}].{last} or ({rest})");
            let want = or(vp(path, and(f, last)), rest);
            let parsed = parse_filter(&text);
            prop_assert_eq!(parsed.as_ref(), Ok(&want), "text: {}", text);
            // Its canonical text is the bracketed form, which parses to the same tree.
            prop_assert_eq!(parse_filter(&want.to_string()), Ok(want));
        }

        #[test]
        fn arbitrary_strings_never_panic(input in any::<String>()) {
            let _ = parse_filter(&input);
            let _ = parse_path(&input);
        }
    }

    /// A valid filter's canonical text with a few random edits: errors deep inside valid
    /// structure, and (after case changes or inserted blanks) valid variants.
    fn arb_near_miss() -> impl Strategy<Value = String> {
        let edit = (any::<prop::sample::Index>(), 0..4u8, prop::sample::select(TOKENS));
        (arb_filter(), prop::collection::vec(edit, 1..4)).prop_map(|(f, edits)| {
            let mut chars: Vec<char> = f.to_string().chars().collect();
            for (at, kind, token) in edits {
                let i = at.index(chars.len() + 1);
                match kind {
                    0 if i < chars.len() => {
                        chars.remove(i);
                    }
                    1 => {
                        chars.splice(i..i, token.chars());
                    }
                    2 => chars.insert(i, ' '),
                    _ if i < chars.len() => chars[i] = chars[i].to_ascii_uppercase(),
                    _ => {}
                }
            }
            chars.into_iter().collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn filter_like_strings_never_panic_and_round_trip(input in prop_oneof![arb_soup(), arb_near_miss()]) {
            let user = bjensen();
            if let Ok(f) = parse_filter(&input) {
                let _ = matches(&f, &user);
                prop_assert_eq!(parse_filter(&f.to_string()), Ok(f));
            }
            if let Ok(path) = parse_path(&input) {
                prop_assert_eq!(parse_path(&path.to_string()), Ok(path));
            }
            if let Err(e) = parse_filter(&input) {
                prop_assert!(e.position <= input.chars().count());
            }
        }
    }
}
