//! The `Link` response header GitHub paginates with (REST API "Using pagination"):
//! `<https://api.github.com/...&page=2>; rel="next", <...&page=5>; rel="last"`.

/// The URL of the `rel="next"` page, if any.
pub fn next_url(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| url.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_page() {
        let h = r#"<https://api.github.com/orgs/o/actions/runners?per_page=100&page=2>; rel="next", <https://api.github.com/orgs/o/actions/runners?per_page=100&page=3>; rel="last""#;
        assert_eq!(
            next_url(h).as_deref(),
            Some("https://api.github.com/orgs/o/actions/runners?per_page=100&page=2")
        );
        let last = r#"<https://x/?page=1>; rel="prev", <https://x/?page=1>; rel="first""#;
        assert_eq!(next_url(last), None);
        assert_eq!(next_url(""), None);
        assert_eq!(next_url("garbage; rel=\"next\""), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn any_link_header_gives_a_url_or_none(h in proptest::prelude::any::<String>()) {
            let _ = next_url(&h);
        }

        #[test]
        fn link_shaped_headers_give_a_url_or_none(h in "(<[ -~]{0,20}>(; ?rel=\"?[a-z]{0,5}\"?){0,2},? ?){0,3}") {
            if let Some(u) = next_url(&h) {
                proptest::prop_assert!(h.contains(&u));
            }
        }
    }
}
