//! Condition expressions for plain tables' conditional writes: a
//! recursive-descent parser for the subset leases need, and its evaluation
//! against an item.
//!
//! ```text
//! condition := or
//! or        := and ("OR" and)*
//! and       := unary ("AND" unary)*
//! unary     := "NOT" unary | primary
//! primary   := "(" condition ")"
//!            | ("attribute_exists" | "attribute_not_exists") "(" path ")"
//!            | operand ("=" | "<>" | "<" | "<=" | ">" | ">=") operand
//! operand   := path | ":value"
//! path      := identifier | "#name"
//! ```
//!
//! Keywords are case-insensitive, function names case-sensitive, as in the
//! service. Placeholders are resolved while parsing, so an undefined one is
//! an error even in a branch that would not be evaluated, and placeholders
//! the expression never uses are refused, as the service refuses them.
//! Anything outside the subset (nested paths, `BETWEEN`, `IN`, other
//! functions) is a ValidationException naming it, never a silent mismatch.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::attr;

/// The service's cap on an expression's length.
const MAX_LENGTH: usize = 4096;
/// Parentheses and NOTs nested deeper than this are refused, so a hostile
/// expression cannot exhaust a worker's stack.
const MAX_DEPTH: usize = 64;

/// A parsed condition, its placeholders resolved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    Exists(String),
    NotExists(String),
    Compare(Operand, Cmp, Operand),
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    /// A top-level attribute of the item, by name.
    Attribute(String),
    /// A value from ExpressionAttributeValues.
    Value(Value),
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

impl Condition {
    /// Whether the condition holds for `item` (an absent item is an empty
    /// map: every attribute absent).
    pub(crate) fn holds(&self, item: &Map<String, Value>) -> bool {
        match self {
            Condition::Exists(name) => item.contains_key(name),
            Condition::NotExists(name) => !item.contains_key(name),
            Condition::Compare(a, cmp, b) => compare(a.resolve(item), *cmp, b.resolve(item)),
            Condition::Not(c) => !c.holds(item),
            Condition::And(a, b) => a.holds(item) && b.holds(item),
            Condition::Or(a, b) => a.holds(item) || b.holds(item),
        }
    }
}

impl Operand {
    fn resolve<'a>(&'a self, item: &'a Map<String, Value>) -> Option<&'a Value> {
        match self {
            Operand::Attribute(name) => item.get(name),
            Operand::Value(v) => Some(v),
        }
    }
}

/// As the service compares: `=` needs both sides present, of one type and
/// equal; `<>` is its negation, so it holds when a side is absent or the
/// types differ; an ordering needs two present values of one orderable type.
fn compare(a: Option<&Value>, cmp: Cmp, b: Option<&Value>) -> bool {
    let same = || matches!((a, b), (Some(x), Some(y)) if attr::equal(x, y));
    let order = || match (a, b) {
        (Some(x), Some(y)) => attr::order(x, y),
        _ => None,
    };
    match cmp {
        Cmp::Eq => same(),
        Cmp::Ne => !same(),
        Cmp::Lt => order().is_some_and(std::cmp::Ordering::is_lt),
        Cmp::Le => order().is_some_and(std::cmp::Ordering::is_le),
        Cmp::Gt => order().is_some_and(std::cmp::Ordering::is_gt),
        Cmp::Ge => order().is_some_and(std::cmp::Ordering::is_ge),
    }
}

/// The condition of a write request (`ConditionExpression` with its
/// `ExpressionAttributeNames` and `ExpressionAttributeValues`), `None` when
/// it has none. The error is the ValidationException's message.
pub(crate) fn from_request(body: &Value) -> Result<Option<Condition>, String> {
    let names = placeholders(body, "ExpressionAttributeNames", '#')?;
    let values = placeholders(body, "ExpressionAttributeValues", ':')?;
    let Some(expression) = body.get("ConditionExpression") else {
        for (field, given) in [
            ("ExpressionAttributeNames", names.is_some()),
            ("ExpressionAttributeValues", values.is_some()),
        ] {
            if given {
                return Err(format!(
                    "{field} can only be specified when using expressions"
                ));
            }
        }
        return Ok(None);
    };
    let text = expression
        .as_str()
        .ok_or_else(|| format!("ConditionExpression must be a string, got {expression}"))?;
    let empty = Map::new();
    let mut parser = Parser::new(text, names.unwrap_or(&empty), values.unwrap_or(&empty))?;
    let condition = parser.parse()?;
    for (field, given, used) in [
        ("ExpressionAttributeNames", names, &parser.used_names),
        ("ExpressionAttributeValues", values, &parser.used_values),
    ] {
        let unused: Vec<&str> = given
            .into_iter()
            .flat_map(Map::keys)
            .map(String::as_str)
            .filter(|k| !used.contains(*k))
            .collect();
        if !unused.is_empty() {
            return Err(format!(
                "Value provided in {field} unused in expressions: keys: {{{}}}",
                unused.join(", ")
            ));
        }
    }
    Ok(Some(condition))
}

/// A placeholder map of the request, checked for shape: a non-empty map
/// whose keys start with `sigil`.
fn placeholders<'a>(
    body: &'a Value,
    field: &str,
    sigil: char,
) -> Result<Option<&'a Map<String, Value>>, String> {
    let Some(v) = body.get(field) else {
        return Ok(None);
    };
    let map = v
        .as_object()
        .ok_or_else(|| format!("{field} must be a map, got {v}"))?;
    if map.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if let Some(bad) = map.keys().find(|k| !k.starts_with(sigil) || k.len() < 2) {
        return Err(format!(
            "{field} contains invalid key: \"{bad}\" (keys start with {sigil})"
        ));
    }
    Ok(Some(map))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Comma,
    Cmp(Cmp),
    /// An identifier: an attribute name, a keyword or a function name.
    Word(String),
    /// `#name`.
    Name(String),
    /// `:value`.
    Value(String),
    /// Digits, which only a list index (`a[0]`) may hold.
    Digits(String),
    /// `.`, `[` or `]`: a nested path, which the simulator does not support.
    Nested(char),
}

/// A token and the byte offset where it starts.
type Spanned = (Token, usize);

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Result<Vec<Spanned>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let mut word = |first: Option<char>| {
            let mut s: String = first.into_iter().collect();
            while let Some(&(_, n)) = chars.peek() {
                if !is_word_char(n) {
                    break;
                }
                s.push(n);
                chars.next();
            }
            s
        };
        let token = match c {
            c if c.is_whitespace() => continue,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            '.' | '[' | ']' => Token::Nested(c),
            '=' => Token::Cmp(Cmp::Eq),
            '<' | '>' => {
                let next = chars.peek().map(|&(_, n)| n);
                let (cmp, long) = match (c, next) {
                    ('<', Some('>')) => (Cmp::Ne, true),
                    ('<', Some('=')) => (Cmp::Le, true),
                    ('>', Some('=')) => (Cmp::Ge, true),
                    ('<', _) => (Cmp::Lt, false),
                    _ => (Cmp::Gt, false),
                };
                if long {
                    chars.next();
                }
                Token::Cmp(cmp)
            }
            '#' | ':' => {
                let name = word(Some(c));
                if name.len() == 1 {
                    return Err(invalid(format!(
                        "Syntax error; token: \"{c}\", near: \"{}\"",
                        near(text, at)
                    )));
                }
                if c == '#' {
                    Token::Name(name)
                } else {
                    Token::Value(name)
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => Token::Word(word(Some(c))),
            c if c.is_ascii_digit() => Token::Digits(word(Some(c))),
            other => {
                return Err(invalid(format!(
                    "Invalid character encountered; character: \"{other}\", near: \"{}\"",
                    near(text, at)
                )));
            }
        };
        out.push((token, at));
    }
    Ok(out)
}

fn invalid(detail: String) -> String {
    format!("Invalid ConditionExpression: {detail}")
}

/// A few characters of the expression from `at`, for messages.
fn near(text: &str, at: usize) -> String {
    text[at..].chars().take(16).collect()
}

fn keyword(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(word))
}

/// Words the grammar gives a meaning: never attribute names.
const KEYWORDS: &[&str] = &["AND", "OR", "NOT", "BETWEEN", "IN"];

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Spanned>,
    at: usize,
    depth: usize,
    names: &'a Map<String, Value>,
    values: &'a Map<String, Value>,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
}

impl<'a> Parser<'a> {
    fn new(
        text: &'a str,
        names: &'a Map<String, Value>,
        values: &'a Map<String, Value>,
    ) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err(invalid("The expression can not be empty;".into()));
        }
        if text.len() > MAX_LENGTH {
            return Err(invalid(format!(
                "Expression size has exceeded the maximum allowed size ({MAX_LENGTH} bytes)"
            )));
        }
        Ok(Parser {
            text,
            tokens: lex(text)?,
            at: 0,
            depth: 0,
            names,
            values,
            used_names: BTreeSet::new(),
            used_values: BTreeSet::new(),
        })
    }

    fn parse(&mut self) -> Result<Condition, String> {
        let condition = self.or()?;
        match self.peek() {
            None => Ok(condition),
            Some(_) => Err(self.syntax("AND, OR or the end of the expression")),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|(t, _)| t.clone());
        self.at += 1;
        t
    }

    /// A syntax error at the current token.
    fn syntax(&self, expected: &str) -> String {
        match self.tokens.get(self.at) {
            Some((token, at)) => invalid(format!(
                "Syntax error; token: \"{}\", near: \"{}\" (expected {expected})",
                describe(token),
                near(self.text, *at)
            )),
            None => invalid(format!(
                "Syntax error; token: <EOF>, near: \"{}\" (expected {expected})",
                self.text.trim_end()
            )),
        }
    }

    fn or(&mut self) -> Result<Condition, String> {
        let mut left = self.and()?;
        while self.peek().is_some_and(|t| keyword(t, "OR")) {
            self.at += 1;
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, String> {
        let mut left = self.unary()?;
        while self.peek().is_some_and(|t| keyword(t, "AND")) {
            self.at += 1;
            let right = self.unary()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Condition, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(invalid(format!(
                "the expression nests deeper than {MAX_DEPTH} levels"
            )));
        }
        let out = if self.peek().is_some_and(|t| keyword(t, "NOT")) {
            self.at += 1;
            self.unary().map(|c| Condition::Not(Box::new(c)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        out
    }

    fn primary(&mut self) -> Result<Condition, String> {
        match self.peek() {
            Some(Token::Open) => {
                self.at += 1;
                let inner = self.or()?;
                if self.next() != Some(Token::Close) {
                    self.at -= 1;
                    return Err(self.syntax("\")\""));
                }
                Ok(inner)
            }
            Some(Token::Word(w))
                if self.tokens.get(self.at + 1).map(|t| &t.0) == Some(&Token::Open) =>
            {
                let name = w.clone();
                self.function(&name)
            }
            _ => self.comparison(),
        }
    }

    fn function(&mut self, name: &str) -> Result<Condition, String> {
        let make: fn(String) -> Condition = match name {
            "attribute_exists" => Condition::Exists,
            "attribute_not_exists" => Condition::NotExists,
            "attribute_type" | "begins_with" | "contains" | "size" => {
                return Err(invalid(format!(
                    "the function {name} is not supported by the simulator (only attribute_exists and attribute_not_exists)"
                )));
            }
            other => return Err(invalid(format!("Invalid function name; function: {other}"))),
        };
        self.at += 2; // the name and "("
        let argument = match self.operand()? {
            Operand::Attribute(path) => path,
            Operand::Value(v) => {
                return Err(invalid(format!(
                    "Incorrect operand type for operator or function; operator or function: {name}, operand type: {}",
                    attr::type_name(&v)
                )));
            }
        };
        match self.next() {
            Some(Token::Close) => Ok(make(argument)),
            Some(Token::Comma) => Err(invalid(format!(
                "Incorrect number of operands for operator or function; operator or function: {name}, number of operands: more than 1"
            ))),
            _ => {
                self.at -= 1;
                Err(self.syntax("\")\""))
            }
        }
    }

    fn comparison(&mut self) -> Result<Condition, String> {
        let left = self.operand()?;
        let cmp = match self.peek() {
            Some(Token::Cmp(c)) => *c,
            Some(Token::Word(w)) if ["BETWEEN", "IN"].iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                return Err(invalid(format!(
                    "{} is not supported by the simulator (only =, <>, <, <=, >, >=)",
                    w.to_ascii_uppercase()
                )));
            }
            _ => return Err(self.syntax("a comparison operator")),
        };
        self.at += 1;
        let right = self.operand()?;
        if cmp != Cmp::Eq && cmp != Cmp::Ne {
            // The service refuses an unorderable constant outright; an
            // attribute's type is only known when evaluating.
            for side in [&left, &right] {
                if let Operand::Value(v) = side
                    && !attr::orderable(v)
                {
                    return Err(invalid(format!(
                        "Incorrect operand type for operator or function; operator or function: {}, operand type: {}",
                        cmp.symbol(),
                        attr::type_name(v)
                    )));
                }
            }
        }
        Ok(Condition::Compare(left, cmp, right))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let operand = match self.peek().cloned() {
            Some(Token::Word(w)) => {
                if KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) {
                    return Err(self.syntax("an attribute name or a placeholder"));
                }
                Operand::Attribute(w)
            }
            Some(Token::Name(placeholder)) => {
                let name = self.names.get(&placeholder).ok_or_else(|| {
                    invalid(format!(
                        "An expression attribute name used in the document path is not defined; attribute name: {placeholder}"
                    ))
                })?;
                let name = name.as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
                    format!(
                        "ExpressionAttributeNames contains invalid value: {name} for key {placeholder}"
                    )
                })?;
                self.used_names.insert(placeholder);
                Operand::Attribute(name.to_owned())
            }
            Some(Token::Value(placeholder)) => {
                let value = self.values.get(&placeholder).ok_or_else(|| {
                    invalid(format!(
                        "An expression attribute value used in expression is not defined; attribute value: {placeholder}"
                    ))
                })?;
                attr::check(value).map_err(|e| {
                    format!("ExpressionAttributeValues contains invalid value: {e} for key {placeholder}")
                })?;
                self.used_values.insert(placeholder);
                Operand::Value(value.clone())
            }
            _ => return Err(self.syntax("an attribute name or a placeholder")),
        };
        self.at += 1;
        if let Some(Token::Nested(c)) = self.peek() {
            return Err(invalid(format!(
                "nested attribute paths (\"{c}\") are not supported by the simulator: only top-level attributes"
            )));
        }
        Ok(operand)
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Open => "(".into(),
        Token::Close => ")".into(),
        Token::Comma => ",".into(),
        Token::Cmp(c) => c.symbol().into(),
        Token::Word(s) | Token::Name(s) | Token::Value(s) | Token::Digits(s) => s.clone(),
        Token::Nested(c) => c.to_string(),
    }
}

#[cfg(test)]
mod tests;
