//! The access-log filter of Istio's Telemetry API (`accessLogging[].filter.expression`),
//! a small, typed subset of CEL: comparisons of request/response attributes,
//! `&&`, `||`, `!` and parentheses. The agent parses an expression to refuse a
//! bad one when the Telemetry arrives; the proxy parses the same string with the
//! same code and evaluates it once per request, so the two cannot disagree.
//!
//! Attributes (Envoy's names): `response.code` (int), `request.method`,
//! `request.path`, `request.url_path`, `request.host`, `request.protocol`,
//! `request.id`, `request.useragent`, `request.headers['name']` (strings) and
//! `connection.mtls` (bool). A header the request lacks makes its comparisons
//! false, as an evaluation error does in Envoy's CEL filter.

use std::fmt;

/// Why an expression is refused: the expression and what is wrong at which offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access log filter {expression:?}: {reason} (at offset {at})")]
pub struct FilterError {
    pub expression: String,
    pub at: usize,
    pub reason: String,
}

/// A value type of the subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Str,
    Bool,
}

/// An attribute an expression can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    ResponseCode,
    Method,
    Path,
    UrlPath,
    Host,
    Protocol,
    RequestId,
    UserAgent,
    /// A request header, lower-cased.
    Header(String),
    Mtls,
}

impl Attr {
    fn ty(&self) -> Ty {
        match self {
            Attr::ResponseCode => Ty::Int,
            Attr::Mtls => Ty::Bool,
            _ => Ty::Str,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Int(i64),
    Str(String),
    Bool(bool),
    Attr(Attr),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
}

/// What one request offers the filter.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub code: u16,
    pub method: &'a str,
    /// Path with query, as on the request line.
    pub path: &'a str,
    pub host: &'a str,
    pub protocol: &'a str,
    pub request_id: &'a str,
    pub user_agent: &'a str,
    /// The headers the filter names ([`Filter::headers`]) that the request had.
    pub headers: &'a [(String, String)],
    pub mtls: bool,
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Int(i64),
    Str(&'a str),
    Bool(bool),
    /// A missing header: every comparison with it is false.
    Missing,
}

impl Filter {
    /// Parses and type-checks `s`; the whole expression must be boolean.
    pub fn parse(s: &str) -> Result<Filter, FilterError> {
        let mut p = Parser {
            src: s,
            toks: lex(s)?,
            i: 0,
        };
        let expr = p.or()?;
        if let Some(t) = p.toks.get(p.i) {
            return Err(p.err(t.at, format!("unexpected {}", t.tok)));
        }
        if ty(&expr) != Ty::Bool {
            return Err(p.err(0, "the expression is not a boolean".into()));
        }
        Ok(Filter { expr })
    }

    /// Request headers the filter reads (lower-cased): what a proxy keeps of a request.
    pub fn headers(&self) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Attr(Attr::Header(h)) if !out.contains(h) => out.push(h.clone()),
                Expr::Not(a) => walk(a, out),
                Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                    walk(a, out);
                    walk(b, out)
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }

    /// Whether the request is logged.
    pub fn matches(&self, r: &Request<'_>) -> bool {
        eval(&self.expr, r) == Val::Bool(true)
    }
}

fn ty(e: &Expr) -> Ty {
    match e {
        Expr::Int(_) => Ty::Int,
        Expr::Str(_) => Ty::Str,
        Expr::Attr(a) => a.ty(),
        _ => Ty::Bool,
    }
}

fn eval<'a>(e: &'a Expr, r: &Request<'a>) -> Val<'a> {
    match e {
        Expr::Int(i) => Val::Int(*i),
        Expr::Str(s) => Val::Str(s),
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Attr(a) => match a {
            Attr::ResponseCode => Val::Int(r.code.into()),
            Attr::Method => Val::Str(r.method),
            Attr::Path => Val::Str(r.path),
            Attr::UrlPath => Val::Str(r.path.split('?').next().unwrap_or("")),
            Attr::Host => Val::Str(r.host),
            Attr::Protocol => Val::Str(r.protocol),
            Attr::RequestId => Val::Str(r.request_id),
            Attr::UserAgent => Val::Str(r.user_agent),
            Attr::Mtls => Val::Bool(r.mtls),
            Attr::Header(h) => r
                .headers
                .iter()
                .find(|(k, _)| k == h)
                .map_or(Val::Missing, |(_, v)| Val::Str(v)),
        },
        Expr::Not(a) => match eval(a, r) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Missing,
        },
        Expr::And(a, b) => {
            Val::Bool(eval(a, r) == Val::Bool(true) && eval(b, r) == Val::Bool(true))
        }
        Expr::Or(a, b) => Val::Bool(eval(a, r) == Val::Bool(true) || eval(b, r) == Val::Bool(true)),
        Expr::Cmp(op, a, b) => {
            let ord = match (eval(a, r), eval(b, r)) {
                (Val::Int(x), Val::Int(y)) => x.cmp(&y),
                (Val::Str(x), Val::Str(y)) => x.cmp(y),
                (Val::Bool(x), Val::Bool(y)) => x.cmp(&y),
                _ => return Val::Missing,
            };
            use std::cmp::Ordering::*;
            Val::Bool(match op {
                CmpOp::Eq => ord == Equal,
                CmpOp::Ne => ord != Equal,
                CmpOp::Lt => ord == Less,
                CmpOp::Le => ord != Greater,
                CmpOp::Gt => ord == Greater,
                CmpOp::Ge => ord != Less,
            })
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Int(i) => write!(f, "number {i}"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Ident(s) => write!(f, "name {s:?}"),
            Tok::Op(o) => write!(f, "{o:?}"),
        }
    }
}

struct Spanned {
    tok: Tok,
    at: usize,
}

const OPS: [&str; 15] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ".", ",",
];

fn lex(s: &str) -> Result<Vec<Spanned>, FilterError> {
    let err = |at: usize, reason: &str| FilterError {
        expression: s.into(),
        at,
        reason: reason.into(),
    };
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let st = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = s[st..i]
                .parse()
                .map_err(|_| err(st, "number out of range"))?;
            out.push(Spanned {
                tok: Tok::Int(n),
                at: st,
            });
        } else if c == b'\'' || c == b'"' {
            let st = i;
            i += 1;
            let mut v = String::new();
            loop {
                match b.get(i) {
                    None => return Err(err(st, "unterminated string")),
                    Some(&q) if q == c => break,
                    Some(b'\\') if i + 1 < b.len() => {
                        v.push(b[i + 1] as char);
                        i += 2;
                    }
                    Some(_) => {
                        let ch = s[i..].chars().next().unwrap_or('?');
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            i += 1;
            out.push(Spanned {
                tok: Tok::Str(v),
                at: st,
            });
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let st = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Spanned {
                tok: Tok::Ident(s[st..i].into()),
                at: st,
            });
        } else if let Some(op) = OPS.iter().find(|o| s[i..].starts_with(**o)) {
            out.push(Spanned {
                tok: Tok::Op(op),
                at: i,
            });
            i += op.len();
        } else {
            let ch = s[i..].chars().next().unwrap_or('?');
            return Err(err(i, &format!("unexpected character {ch:?}")));
        }
    }
    Ok(out)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Spanned>,
    i: usize,
}

impl Parser<'_> {
    fn err(&self, at: usize, reason: String) -> FilterError {
        FilterError {
            expression: self.src.into(),
            at,
            reason,
        }
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.i), Some(Spanned { tok: Tok::Op(o), .. }) if *o == op)
    }

    fn here(&self) -> usize {
        self.toks.get(self.i).map_or(self.src.len(), |t| t.at)
    }

    fn expect(&mut self, op: &str) -> Result<(), FilterError> {
        if self.peek_op(op) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(self.here(), format!("expected {op:?}")))
        }
    }

    fn bool_operand(&self, e: &Expr, at: usize, op: &str) -> Result<(), FilterError> {
        if ty(e) == Ty::Bool {
            Ok(())
        } else {
            Err(self.err(at, format!("operand of {op:?} is not a boolean")))
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let at = self.here();
        let mut l = self.and()?;
        while self.peek_op("||") {
            self.i += 1;
            let rat = self.here();
            let r = self.and()?;
            self.bool_operand(&l, at, "||")?;
            self.bool_operand(&r, rat, "||")?;
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let at = self.here();
        let mut l = self.unary()?;
        while self.peek_op("&&") {
            self.i += 1;
            let rat = self.here();
            let r = self.unary()?;
            self.bool_operand(&l, at, "&&")?;
            self.bool_operand(&r, rat, "&&")?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek_op("!") {
            let at = self.here();
            self.i += 1;
            let e = self.unary()?;
            self.bool_operand(&e, at, "!")?;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, FilterError> {
        let at = self.here();
        let l = self.primary()?;
        let op = match self.toks.get(self.i) {
            Some(Spanned {
                tok: Tok::Op(o), ..
            }) => match *o {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                _ => return Ok(l),
            },
            _ => return Ok(l),
        };
        self.i += 1;
        let r = self.primary()?;
        let (lt, rt) = (ty(&l), ty(&r));
        if lt != rt {
            return Err(self.err(at, format!("cannot compare {lt:?} with {rt:?}")));
        }
        if lt == Ty::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(self.err(at, "booleans are compared only with == and !=".into()));
        }
        Ok(Expr::Cmp(op, Box::new(l), Box::new(r)))
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let Some(t) = self.toks.get(self.i) else {
            return Err(self.err(self.src.len(), "unexpected end of expression".into()));
        };
        let at = t.at;
        let tok = t.tok.clone();
        self.i += 1;
        match tok {
            Tok::Int(n) => Ok(Expr::Int(n)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Op("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(id) if id == "true" || id == "false" => Ok(Expr::Bool(id == "true")),
            Tok::Ident(root) => self.attribute(root, at),
            t => Err(self.err(at, format!("unexpected {t}"))),
        }
    }

    fn attribute(&mut self, root: String, at: usize) -> Result<Expr, FilterError> {
        let mut path = vec![root];
        while self.peek_op(".") {
            self.i += 1;
            match self.toks.get(self.i) {
                Some(Spanned {
                    tok: Tok::Ident(s), ..
                }) => {
                    path.push(s.clone());
                    self.i += 1;
                }
                _ => return Err(self.err(self.here(), "expected an attribute name".into())),
            }
        }
        let name = path.join(".");
        if name == "request.headers" {
            self.expect("[")?;
            let h = match self.toks.get(self.i) {
                Some(Spanned {
                    tok: Tok::Str(s), ..
                }) if !s.is_empty() => s.to_ascii_lowercase(),
                _ => return Err(self.err(self.here(), "expected a header name string".into())),
            };
            self.i += 1;
            self.expect("]")?;
            return Ok(Expr::Attr(Attr::Header(h)));
        }
        let a = match name.as_str() {
            "response.code" => Attr::ResponseCode,
            "request.method" => Attr::Method,
            "request.path" => Attr::Path,
            "request.url_path" => Attr::UrlPath,
            "request.host" => Attr::Host,
            "request.protocol" => Attr::Protocol,
            "request.id" => Attr::RequestId,
            "request.useragent" => Attr::UserAgent,
            "connection.mtls" => Attr::Mtls,
            _ => return Err(self.err(at, format!("unknown attribute {name}"))),
        };
        Ok(Expr::Attr(a))
    }
}

#[cfg(test)]
mod tests;
