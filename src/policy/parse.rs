//! oslo.policy's rule language: rule text is parsed into a [`Check`] tree once, when
//! the rules are loaded, and the tree is evaluated for each request.
//!
//! # Syntax
//!
//! A rule is split into words at whitespace (as oslo does: a check never contains a
//! space). Leading `(` and trailing `)` of a word are parentheses; what remains is
//! `and`, `or` or `not` (any case), or a check:
//!
//! | check                     | passes when                                            |
//! |---------------------------|--------------------------------------------------------|
//! | `@`                       | always                                                 |
//! | `!`                       | never                                                  |
//! | `rule:NAME`               | rule `NAME` passes (an undefined one: the default rule)|
//! | `role:NAME`               | the caller has role `NAME` (case-insensitive)          |
//! | `KEY:VALUE`               | the caller's credential `KEY` equals `VALUE`           |
//! | `'literal':VALUE`         | `literal` equals `VALUE` (also `"literal"`, `True`, `False`, `None`, integers) |
//!
//! `VALUE` (and a role's `NAME`) may hold `%(name)s`, replaced by the target's value
//! for `name`; a check whose target value is missing does not pass. `%%` is a `%`.
//! Credential keys are `user_id`, `project_id`, `is_admin` (`True`/`False`) and `roles`
//! (any role equal, case-sensitive); every other key (`domain_id`, `system_scope`, a
//! dotted path, ...) is absent, so its check does not pass.
//!
//! `not` binds tighter than `and`, which binds tighter than `or`; parentheses group.
//! The empty rule `""` always passes. The older JSON form, a list of lists of checks
//! (the outer list is "or", an inner one "and"), is read too: `[]` always passes.
//!
//! # Errors instead of oslo's fail-closed
//!
//! oslo logs a rule it cannot parse and then treats it as `!`; here such a rule is an
//! error when the rules are loaded, so a typo stops the service at start instead of
//! silently refusing everyone. This covers unbalanced parentheses, a word that is not
//! `KIND:VALUE`, a quoted word where a check belongs, `%` not followed by `(name)s` or
//! `%`, a left-hand side that is neither a credential name nor a literal, and remote
//! checks (`http:`/`https:`, for which this server has no client).

use std::borrow::Cow;

use super::{Credentials, Lookup};

/// Parentheses nested deeper than this are refused (the parser is recursive).
const MAX_NESTING: usize = 64;

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// `@`, `""` or `[]`.
    Pass,
    /// `!`.
    Fail,
    /// `not CHECK`.
    Not(Box<Check>),
    /// Checks joined by `and`.
    All(Vec<Check>),
    /// Checks joined by `or`.
    Any(Vec<Check>),
    /// `rule:NAME`.
    Rule(String),
    /// `role:NAME`.
    Role(Template),
    /// `LEFT:RIGHT`.
    Generic {
        /// What is compared.
        left: Left,
        /// What it must equal.
        right: Template,
    },
}

/// The left-hand side of a generic check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Left {
    /// A quoted string, `True`, `False`, `None` or an integer: compared as written.
    Literal(String),
    /// A credential, by its dotted path.
    Credential(Vec<String>),
}

/// A value with `%(name)s` placeholders for target values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Key(String),
}

/// One element of the list form: a check, or checks that must all pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListItem {
    /// A bare string.
    One(String),
    /// An inner list.
    All(Vec<String>),
}

/// Where `rule:NAME` checks find their rules.
pub(crate) trait RuleSet {
    /// The rule `name` stands for (the default rule for an undefined name, as oslo).
    fn resolve(&self, name: &str) -> Option<&Check>;
}

/// Parses rule text.
pub(crate) fn parse_text(rule: &str) -> Result<Check, String> {
    if rule.is_empty() {
        return Ok(Check::Pass);
    }
    let tokens = tokenize(rule);
    if tokens.is_empty() {
        return Err(
            "the rule is only whitespace (write \"\" for a rule that always passes)".into(),
        );
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let check = parser.any()?;
    match parser.tokens.get(parser.pos) {
        None => Ok(check),
        Some(token) => Err(format!(
            "unexpected {} after a complete rule",
            token.describe()
        )),
    }
}

/// Parses the list form: the outer list is "or", an inner list "and"; every string is a
/// single check. An empty outer list passes; one holding only empty lists never does.
pub(crate) fn parse_list(items: &[ListItem]) -> Result<Check, String> {
    if items.is_empty() {
        return Ok(Check::Pass);
    }
    let mut any = Vec::new();
    for item in items {
        let texts = match item {
            ListItem::One(text) => std::slice::from_ref(text),
            ListItem::All(texts) => texts.as_slice(),
        };
        let mut all = texts
            .iter()
            .map(|text| parse_check(text))
            .collect::<Result<Vec<_>, _>>()?;
        match all.len() {
            0 => {}
            1 => any.extend(all.pop()),
            _ => any.push(Check::All(all)),
        }
    }
    Ok(match any.len() {
        0 => Check::Fail,
        1 => any.pop().unwrap_or(Check::Fail),
        _ => Check::Any(any),
    })
}

impl Check {
    /// Whether the check passes for `creds` acting on `target`.
    pub(crate) fn evaluate(
        &self,
        rules: &dyn RuleSet,
        creds: &Credentials<'_>,
        target: &dyn Lookup,
    ) -> bool {
        match self {
            Check::Pass => true,
            Check::Fail => false,
            Check::Not(check) => !check.evaluate(rules, creds, target),
            Check::All(checks) => checks.iter().all(|c| c.evaluate(rules, creds, target)),
            Check::Any(checks) => checks.iter().any(|c| c.evaluate(rules, creds, target)),
            // Rules were checked for cycles when they were loaded, so this ends.
            Check::Rule(name) => rules
                .resolve(name)
                .is_some_and(|rule| rule.evaluate(rules, creds, target)),
            Check::Role(name) => name.render(target).is_some_and(|name| {
                creds.roles.iter().any(|role| {
                    role.eq_ignore_ascii_case(&name) || role.to_lowercase() == name.to_lowercase()
                })
            }),
            Check::Generic { left, right } => right
                .render(target)
                .is_some_and(|value| left.matches(&value, creds)),
        }
    }

    /// The names of the rules this check refers to with `rule:NAME`.
    pub(crate) fn references(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_references(&mut names);
        names
    }

    fn collect_references<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            Check::Rule(name) => names.push(name),
            Check::Not(check) => check.collect_references(names),
            Check::All(checks) | Check::Any(checks) => {
                for check in checks {
                    check.collect_references(names);
                }
            }
            Check::Pass | Check::Fail | Check::Role(_) | Check::Generic { .. } => {}
        }
    }
}

impl Left {
    fn parse(kind: &str) -> Result<Left, String> {
        if let Some(quote) = kind.chars().next().filter(|c| *c == '\'' || *c == '"') {
            return quoted_literal(kind, quote).map(Left::Literal);
        }
        if matches!(kind, "True" | "False" | "None") || is_integer(kind) {
            return Ok(Left::Literal(kind.to_owned()));
        }
        let path: Vec<String> = kind.split('.').map(str::to_owned).collect();
        if path.iter().all(|segment| is_name(segment)) {
            Ok(Left::Credential(path))
        } else {
            Err(format!(
                "{kind:?} before ':' is neither a credential name nor a literal \
                 (a quoted string, True, False, None or an integer)"
            ))
        }
    }

    fn matches(&self, value: &str, creds: &Credentials<'_>) -> bool {
        match self {
            Left::Literal(literal) => literal == value,
            Left::Credential(path) => match path.as_slice() {
                [key] => credential_matches(key, value, creds),
                _ => false,
            },
        }
    }
}

/// Whether credential `key` of `creds` equals `value`; an absent credential never does.
fn credential_matches(key: &str, value: &str, creds: &Credentials<'_>) -> bool {
    match key {
        "user_id" => creds.user_id == Some(value),
        "project_id" => creds.project_id == Some(value),
        "is_admin" => value == if creds.is_admin { "True" } else { "False" },
        "roles" => creds.roles.iter().any(|role| role == value),
        _ => false,
    }
}

/// The text between matching quotes, which must not hold that quote or a backslash
/// (escapes are not interpreted).
fn quoted_literal(kind: &str, quote: char) -> Result<String, String> {
    let inner = kind
        .strip_prefix(quote)
        .and_then(|rest| rest.strip_suffix(quote))
        .filter(|inner| !inner.contains(quote) && !inner.contains('\\'));
    inner
        .map(str::to_owned)
        .ok_or_else(|| format!("{kind:?} before ':' is not a simple quoted string"))
}

/// A decimal integer as Python writes it (no sign, no leading zero).
fn is_integer(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

/// A credential path segment: a letter or `_`, then letters, digits, `_` or `-`.
fn is_name(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Template {
    /// Parses Python's `%`-formatting with a mapping: `%(name)s` and `%%` only.
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
                continue;
            }
            let (key, tail) = placeholder(after)
                .ok_or_else(|| format!("{text:?}: '%' must start %(name)s or be doubled"))?;
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Key(key.to_owned()));
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// The value with every placeholder replaced; `None` when a key is not in `target`.
    fn render<'a>(&'a self, target: &'a dyn Lookup) -> Option<Cow<'a, str>> {
        match self.pieces.as_slice() {
            [Piece::Text(text)] => return Some(Cow::Borrowed(text)),
            [Piece::Key(key)] => return target.value(key),
            _ => {}
        }
        let mut value = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => value.push_str(text),
                Piece::Key(key) => value.push_str(&target.value(key)?),
            }
        }
        Some(Cow::Owned(value))
    }
}

/// Splits `(name)s...` (what follows a `%`) into `name` and the rest. Parentheses
/// inside the name nest, as in Python.
fn placeholder(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('(')?;
    let mut depth = 1usize;
    for (at, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let tail = inner[at + 1..].strip_prefix('s')?;
                    return Some((&inner[..at], tail));
                }
            }
            _ => {}
        }
    }
    None
}

/// A single check (a word of a text rule, or a string of the list form).
fn parse_check(text: &str) -> Result<Check, String> {
    match text {
        "@" => return Ok(Check::Pass),
        "!" => return Ok(Check::Fail),
        _ => {}
    }
    let Some((kind, value)) = text.split_once(':') else {
        return Err(format!(
            "{text:?} is not a check (KIND:VALUE, \"@\" or \"!\")"
        ));
    };
    match kind {
        "rule" => Ok(Check::Rule(value.to_owned())),
        "role" => Ok(Check::Role(Template::parse(value)?)),
        "http" | "https" => Err(format!(
            "{text:?}: {kind} checks (asking a remote policy server) are not supported"
        )),
        _ => Ok(Check::Generic {
            left: Left::parse(kind)?,
            right: Template::parse(value)?,
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    /// A word wholly in quotes: never a valid check.
    Quoted(String),
    Check(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::And => "'and'".into(),
            Token::Or => "'or'".into(),
            Token::Not => "'not'".into(),
            Token::Quoted(text) => format!("quoted string {text:?}"),
            Token::Check(text) => format!("check {text:?}"),
        }
    }
}

/// oslo's tokenizer: whitespace-separated words, parentheses peeled off their ends.
fn tokenize(rule: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    for word in rule.split_whitespace() {
        let rest = word.trim_start_matches('(');
        tokens.extend(std::iter::repeat_n(Token::Open, word.len() - rest.len()));
        let clean = rest.trim_end_matches(')');
        if !clean.is_empty() {
            tokens.push(word_token(rest, clean));
        }
        tokens.extend(std::iter::repeat_n(Token::Close, rest.len() - clean.len()));
    }
    tokens
}

/// The token for `clean`, the word without its parentheses; `rest` still has the
/// closing ones (oslo decides on quotes before removing them).
fn word_token(rest: &str, clean: &str) -> Token {
    if clean.eq_ignore_ascii_case("and") {
        Token::And
    } else if clean.eq_ignore_ascii_case("or") {
        Token::Or
    } else if clean.eq_ignore_ascii_case("not") {
        Token::Not
    } else if rest.len() >= 2
        && ((rest.starts_with('"') && rest.ends_with('"'))
            || (rest.starts_with('\'') && rest.ends_with('\'')))
    {
        Token::Quoted(rest[1..rest.len() - 1].to_owned())
    } else {
        Token::Check(clean.to_owned())
    }
}

/// Recursive descent: `any := all ('or' all)*`, `all := unary ('and' unary)*`,
/// `unary := 'not' unary | '(' any ')' | check`.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn any(&mut self) -> Result<Check, String> {
        let mut checks = vec![self.all()?];
        while self.eat(&Token::Or) {
            checks.push(self.all()?);
        }
        Ok(join(checks, Check::Any))
    }

    fn all(&mut self) -> Result<Check, String> {
        let mut checks = vec![self.unary()?];
        while self.eat(&Token::And) {
            checks.push(self.unary()?);
        }
        Ok(join(checks, Check::All))
    }

    fn unary(&mut self) -> Result<Check, String> {
        let Some(token) = self.tokens.get(self.pos).cloned() else {
            return Err("the rule ends where a check is expected".into());
        };
        self.pos += 1;
        match token {
            Token::Not => self.nested(|p| p.unary()).map(|c| Check::Not(Box::new(c))),
            Token::Open => {
                let check = self.nested(|p| p.any())?;
                if self.eat(&Token::Close) {
                    Ok(check)
                } else {
                    Err("a '(' is not closed".into())
                }
            }
            Token::Check(text) => parse_check(&text),
            Token::Quoted(text) => Err(format!(
                "quoted string {text:?} stands where a check is expected"
            )),
            Token::Close | Token::And | Token::Or => Err(format!(
                "{} stands where a check is expected",
                token.describe()
            )),
        }
    }

    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Check, String>,
    ) -> Result<Check, String> {
        if self.depth >= MAX_NESTING {
            return Err(format!("nested more than {MAX_NESTING} deep"));
        }
        self.depth += 1;
        let check = parse(self);
        self.depth -= 1;
        check
    }

    fn eat(&mut self, token: &Token) -> bool {
        let found = self.tokens.get(self.pos) == Some(token);
        if found {
            self.pos += 1;
        }
        found
    }
}

/// One check stays itself; several are joined with `make`.
fn join(mut checks: Vec<Check>, make: fn(Vec<Check>) -> Check) -> Check {
    if checks.len() == 1 {
        checks.pop().unwrap_or(Check::Fail)
    } else {
        make(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Target;
    use std::collections::BTreeMap;

    /// Rules by name, for `rule:` checks.
    struct Rules(BTreeMap<&'static str, Check>);

    impl RuleSet for Rules {
        fn resolve(&self, name: &str) -> Option<&Check> {
            self.0.get(name)
        }
    }

    fn no_rules() -> Rules {
        Rules(BTreeMap::new())
    }

    fn target(pairs: &[(&str, &str)]) -> Target {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|r| r.to_string()).collect()
    }

    fn creds<'a>(project: Option<&'a str>, roles: &'a [String]) -> Credentials<'a> {
        Credentials {
            user_id: Some("u1"),
            project_id: project,
            roles,
            is_admin: false,
        }
    }

    /// Evaluates `rule` with the member of project `p1` against `target`.
    fn passes(rule: &str, target: &Target) -> bool {
        let roles = roles(&["member", "Reader"]);
        let check = parse_text(rule).unwrap();
        check.evaluate(&no_rules(), &creds(Some("p1"), &roles), target)
    }

    #[test]
    fn constants_pass_or_fail() {
        let t = Target::new();
        assert!(passes("", &t));
        assert!(passes("@", &t));
        assert!(!passes("!", &t));
        assert!(passes("not !", &t));
        assert_eq!(parse_list(&[]), Ok(Check::Pass));
        assert_eq!(parse_list(&[ListItem::All(vec![])]), Ok(Check::Fail));
    }

    #[test]
    fn role_checks_ignore_case_and_may_use_the_target() {
        let t = target(&[("wanted", "MEMBER")]);
        assert!(passes("role:member", &t));
        assert!(passes("role:MEMBER", &t));
        assert!(passes("role:reader", &t));
        assert!(!passes("role:admin", &t));
        assert!(passes("role:%(wanted)s", &t));
        assert!(!passes("role:%(missing)s", &t));
    }

    #[test]
    fn generic_checks_compare_credentials_with_the_target() {
        let t = target(&[("project_id", "p1"), ("owner", "p2")]);
        assert!(passes("project_id:%(project_id)s", &t));
        assert!(!passes("project_id:%(owner)s", &t));
        assert!(
            !passes("project_id:%(member_id)s", &t),
            "missing target key"
        );
        assert!(passes("project_id:p1", &t));
        assert!(passes("user_id:u1", &t));
        assert!(passes("roles:member", &t));
        assert!(
            !passes("roles:reader", &t),
            "roles: is case-sensitive, as in oslo"
        );
        assert!(!passes("domain_id:%(project_id)s", &t), "absent credential");
        assert!(!passes("system_scope:all", &t));
        assert!(!passes("project.id:p1", &t), "no nested credentials");
        assert!(
            !passes("ROLE:member", &t),
            "only lower-case 'role' is a role check"
        );
    }

    #[test]
    fn quoted_values_on_the_right_keep_their_quotes_as_in_oslo() {
        // oslo compares the text after ':' as written, quotes included.
        let t = Target::new();
        assert!(!passes("project_id:'p1'", &t));
    }

    #[test]
    fn literals_on_the_left_compare_with_the_target() {
        let public = target(&[("visibility", "public"), ("flag", "True"), ("n", "42")]);
        assert!(passes("'public':%(visibility)s", &public));
        assert!(passes("\"public\":%(visibility)s", &public));
        assert!(!passes("'shared':%(visibility)s", &public));
        assert!(!passes("'public':%(missing)s", &public));
        assert!(passes("True:%(flag)s", &public));
        assert!(!passes("False:%(flag)s", &public));
        assert!(passes("42:%(n)s", &public));
    }

    #[test]
    fn is_admin_reads_the_credential() {
        let roles = roles(&[]);
        let mut admin = creds(None, &roles);
        admin.is_admin = true;
        let t = Target::new();
        let yes = parse_text("is_admin:True").unwrap();
        let no = parse_text("is_admin:False").unwrap();
        assert!(yes.evaluate(&no_rules(), &admin, &t));
        assert!(!no.evaluate(&no_rules(), &admin, &t));
        admin.is_admin = false;
        assert!(!yes.evaluate(&no_rules(), &admin, &t));
        assert!(no.evaluate(&no_rules(), &admin, &t));
    }

    #[test]
    fn percent_formatting_is_python_s() {
        let t = target(&[("a(b)", "x"), ("k", "v")]);
        assert!(passes("'x':%(a(b))s", &t));
        assert!(passes("'100%v':100%%%(k)s", &t));
        for bad in ["x:%(k)d", "x:%s", "x:50%", "x:%(k", "role:%(k)"] {
            assert!(parse_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn not_binds_tighter_than_and_tighter_than_or() {
        let t = Target::new();
        // a or b and c  ==  a or (b and c)
        assert!(passes("@ or ! and !", &t));
        assert!(!passes("(@ or !) and !", &t));
        // a and b or c  ==  (a and b) or c
        assert!(passes("! and ! or @", &t));
        // not a and b  ==  (not a) and b
        assert!(!passes("not @ and !", &t));
        assert!(passes("not (@ and !)", &t));
        assert!(passes("not not @", &t));
        assert!(passes("role:admin or role:member and not role:admin", &t));
        assert!(passes("! OR @", &t));
        assert!(passes("@ And NOT !", &t));
    }

    #[test]
    fn the_tree_has_oslo_shape() {
        let check = parse_text("(role:a or role:b) and role:c or rule:d").unwrap();
        let role = |n: &str| Check::Role(Template::parse(n).unwrap());
        assert_eq!(
            check,
            Check::Any(vec![
                Check::All(vec![Check::Any(vec![role("a"), role("b")]), role("c")]),
                Check::Rule("d".into()),
            ])
        );
        assert_eq!(check.references(), vec!["d"]);
    }

    #[test]
    fn parentheses_may_touch_checks_and_each_other() {
        let t = target(&[("project_id", "p1")]);
        assert!(passes("((project_id:%(project_id)s))", &t));
        assert!(passes("( @ )", &t));
        assert!(passes("(!) or ((@))", &t));
    }

    #[test]
    fn rule_checks_follow_other_rules() {
        let rules = Rules(BTreeMap::from([("yes", Check::Pass), ("no", Check::Fail)]));
        let roles = roles(&[]);
        let c = creds(None, &roles);
        let t = Target::new();
        let eval = |text: &str| parse_text(text).unwrap().evaluate(&rules, &c, &t);
        assert!(eval("rule:yes"));
        assert!(!eval("rule:no"));
        assert!(!eval("rule:undefined"));
        assert!(eval("rule:no or rule:yes"));
    }

    #[test]
    fn invalid_rules_are_errors() {
        for bad in [
            "(role:a",
            "role:a)",
            "role:a and",
            "or role:a",
            "role:a role:b",
            "admin",
            "'quoted'",
            "role:a and 'public'",
            "http://policy.example.com/check",
            "https:x",
            "()",
            "not",
            "   ",
            "-1:%(x)s",
            "007:%(x)s",
            "'un'closed':x",
            "a b:x",
        ] {
            assert!(parse_text(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}@{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse_text(&deep).unwrap_err().contains("nested"));
        let nots = format!("{}@", "not ".repeat(10_000));
        assert!(parse_text(&nots).is_err());
    }

    #[test]
    fn the_list_form_is_or_of_and() {
        let list = [
            ListItem::All(vec!["role:admin".into(), "!".into()]),
            ListItem::One("role:member".into()),
        ];
        let check = parse_list(&list).unwrap();
        let roles = roles(&["member"]);
        assert!(check.evaluate(&no_rules(), &creds(None, &roles), &Target::new()));
        let only_first = parse_list(&list[..1]).unwrap();
        assert!(!only_first.evaluate(&no_rules(), &creds(None, &roles), &Target::new()));
        assert!(parse_list(&[ListItem::One("nope".into())]).is_err());
    }
}
