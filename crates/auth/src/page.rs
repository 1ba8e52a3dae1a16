//! The login page: one self-contained HTML form (no external assets,
//! inline style only), posting to the path it was served from.

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The form. `action` is the login path, `redirect` where to go after
/// logging in, `error` a message shown above the form.
pub fn login_form(action: &str, redirect: &str, user: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · packlight</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; display: flex; justify-content: center; margin-top: 10vh; }}
form {{ background: #fff; padding: 2em; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); min-width: 18em; }}
h1 {{ font-size: 1.3em; margin-top: 0; }}
label {{ display: block; margin: .8em 0 .2em; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: .5em; }}
button {{ margin-top: 1.2em; width: 100%; padding: .6em; }}
.error {{ color: #b00020; }}
</style>
</head>
<body>
<form method="post" action="{action}">
<h1>Sign in</h1>
{error}
<label for="username">User name</label>
<input type="text" id="username" name="username" value="{user}" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<input type="hidden" name="redirect" value="{redirect}">
<button type="submit">Sign in</button>
</form>
</body>
</html>
"#,
        action = escape(action),
        redirect = escape(redirect),
        user = escape(user),
    )
}

/// Where to go after logging in: a local path (one leading `/`, no
/// backslash, no control or space characters), else `/`. Never another
/// origin (`//evil.example`, `/\evil.example`, `https://...`).
pub fn safe_redirect(r: &str) -> &str {
    let b = r.as_bytes();
    let local = b.first() == Some(&b'/')
        && b.get(1) != Some(&b'/')
        && b.len() <= 2048
        && !b
            .iter()
            .any(|&c| c == b'\\' || c <= b' ' || c == 0x7f || c >= 0x80);
    if local { r } else { "/" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_local() {
        assert_eq!(safe_redirect("/app/get?x=1"), "/app/get?x=1");
        assert_eq!(safe_redirect("/"), "/");
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/\t/evil.example",
            "/a\r\nSet-Cookie: x=1",
            "/é",
        ] {
            assert_eq!(safe_redirect(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn the_form_escapes_what_it_echoes() {
        let html = login_form("/login", "/\"><script>", "<b>", Some("x<y"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("x&lt;y"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
