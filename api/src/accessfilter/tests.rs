//! Parsing and evaluating filter expressions: response-code comparisons, boolean
//! operators, headers and mTLS, and errors naming the bad expression.

use super::*;

fn req(code: u16) -> Request<'static> {
    Request {
        code,
        method: "GET",
        path: "/a?b=1",
        host: "web.shop",
        ..Default::default()
    }
}

fn m(expr: &str, r: &Request<'_>) -> bool {
    Filter::parse(expr)
        .unwrap_or_else(|e| panic!("{e}"))
        .matches(r)
}

#[test]
fn response_code_comparisons() {
    for (e, yes, no) in [
        ("response.code >= 400", 404, 200),
        ("response.code == 503", 503, 500),
        ("response.code != 200", 500, 200),
        ("response.code < 300", 204, 301),
        ("response.code <= 300", 300, 301),
        ("response.code > 499", 500, 499),
    ] {
        assert!(m(e, &req(yes)), "{e} {yes}");
        assert!(!m(e, &req(no)), "{e} {no}");
    }
}

#[test]
fn boolean_operators_headers_and_mtls() {
    let h = vec![("x-user".to_string(), "admin".to_string())];
    let mut r = req(200);
    r.headers = &h;
    assert!(m("request.headers['x-user'] == 'admin'", &r));
    assert!(m("request.headers[\"X-User\"]==\"admin\"", &r));
    assert!(!m("request.headers['x-other'] == 'admin'", &r));
    // A missing header makes != false too (CEL: evaluation error, not logged).
    assert!(!m("request.headers['x-other'] != 'admin'", &r));
    assert!(m("response.code >= 500 || request.method == 'GET'", &r));
    assert!(!m("response.code >= 500 && request.method == 'GET'", &r));
    assert!(m("!(response.code >= 500) && request.url_path == '/a'", &r));
    assert!(!m("response.code >= 500 || connection.mtls", &r));
    r.mtls = true;
    assert!(m("response.code >= 500 || connection.mtls", &r));
    assert!(m("connection.mtls == true", &r));
    let f = Filter::parse("request.headers['a'] == 'x' || request.headers['B'] == 'y'").unwrap();
    assert_eq!(f.headers(), vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn bad_expressions_are_named() {
    for (e, what) in [
        ("response.code >=", "end of expression"),
        ("response.code >= '4'", "cannot compare"),
        ("response.code", "not a boolean"),
        (
            "response.status >= 400",
            "unknown attribute response.status",
        ),
        ("response.code >= 400 &&", "end of expression"),
        ("request.headers[x] == 'a'", "header name"),
        ("(response.code >= 400", "expected \")\""),
        ("response.code >= 400 garbage", "unexpected name"),
        ("response.code # 1", "unexpected character"),
        ("'abc", "unterminated"),
        ("response.code && true", "not a boolean"),
    ] {
        let err = Filter::parse(e).unwrap_err();
        assert_eq!(err.expression, e);
        let s = err.to_string();
        assert!(s.contains(what) && s.contains(e), "{e}: {s}");
    }
}
