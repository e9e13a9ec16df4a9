//! Validation of command input (CONTRACT §4 Rules). Pure functions, unit-tested.

use community_shared::problem::FieldError;

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const DISPLAY_NAME_MAX: usize = 64;
pub const AVATAR_URL_MAX: usize = 2048;
pub const CONTENT_MAX: usize = 5000;
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

pub fn is_valid_username(s: &str) -> bool {
    (USERNAME_MIN..=USERNAME_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub fn username(s: Option<&str>) -> Result<String, FieldError> {
    let Some(s) = s else {
        return Err(FieldError::new("username", "is required"));
    };
    if is_valid_username(s) {
        Ok(s.to_string())
    } else {
        Err(FieldError::new(
            "username",
            "must be 3-32 characters of a-z, 0-9 and _",
        ))
    }
}

pub fn display_name(s: Option<&str>) -> Result<Option<String>, FieldError> {
    match s {
        None => Ok(None),
        Some(s) if s.chars().count() > DISPLAY_NAME_MAX => Err(FieldError::new(
            "display_name",
            "must be at most 64 characters",
        )),
        Some(s) if s.chars().any(char::is_control) => Err(FieldError::new(
            "display_name",
            "must not contain control characters",
        )),
        Some(s) => Ok(Some(s.to_string())),
    }
}

pub fn avatar_url(s: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(s) = s else { return Ok(None) };
    let err = |m: &str| Err(FieldError::new("avatar_url", m));
    if s.len() > AVATAR_URL_MAX {
        return err("must be at most 2048 characters");
    }
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()) => {
            // Store what the client sent, once we know it is a well-formed https URL.
            Ok(Some(s.to_string()))
        }
        Ok(_) => err("must be an https URL"),
        Err(_) => err("must be a valid https URL"),
    }
}

/// Post content: trimmed, 1–5000 Unicode characters, not only whitespace.
pub fn content(s: Option<&str>) -> Result<String, FieldError> {
    let Some(s) = s else {
        return Err(FieldError::new("content", "is required"));
    };
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(
            "content",
            "must not be empty or only whitespace",
        ));
    }
    if trimmed.chars().count() > CONTENT_MAX {
        return Err(FieldError::new(
            "content",
            "must be at most 5000 characters",
        ));
    }
    if trimmed.contains('\0') {
        return Err(FieldError::new(
            "content",
            "must not contain NUL characters",
        ));
    }
    Ok(trimmed.to_string())
}

pub fn idempotency_key(s: &str) -> Result<&str, FieldError> {
    if s.is_empty() || s.len() > IDEMPOTENCY_KEY_MAX {
        return Err(FieldError::new(
            "Idempotency-Key",
            "must be 1-255 characters",
        ));
    }
    if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(FieldError::new(
            "Idempotency-Key",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(s)
}

/// A username for a user provisioned from a token: `preferred_username` when it is valid.
pub fn preferred_username(claim: Option<&str>) -> Option<String> {
    let lower = claim?.trim().to_ascii_lowercase();
    is_valid_username(&lower).then_some(lower)
}

/// A generated username: `user_` + the first 10 hex digits of the id, plus a suffix on retries.
pub fn generated_username(id: uuid::Uuid, attempt: u32) -> String {
    let hex = id.simple().to_string();
    if attempt == 0 {
        format!("user_{}", &hex[..10])
    } else {
        let salt = uuid::Uuid::new_v4().simple().to_string();
        format!("user_{}_{}", &hex[..10], &salt[..6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(is_valid_username("abc"));
        assert!(is_valid_username("a_1"));
        assert!(is_valid_username(&"a".repeat(32)));
        for bad in ["ab", "ABC", "a-b", "a b", "ünï", &"a".repeat(33), ""] {
            assert!(!is_valid_username(bad), "{bad}");
        }
        assert!(username(None).is_err());
        assert_eq!(preferred_username(Some(" Ann_B ")), Some("ann_b".into()));
        assert_eq!(preferred_username(Some("a")), None);
        let g = generated_username(uuid::Uuid::now_v7(), 3);
        assert!(is_valid_username(&g), "{g}");
    }

    #[test]
    fn content_is_trimmed_and_counted_in_characters() {
        assert_eq!(content(Some("  hi \n")).unwrap(), "hi");
        assert!(content(Some(" \t\n ")).is_err());
        assert!(content(Some("")).is_err());
        assert!(content(None).is_err());
        assert!(content(Some(&"é".repeat(5000))).is_ok());
        assert!(content(Some(&"é".repeat(5001))).is_err());
        assert!(content(Some("a\0b")).is_err());
    }

    #[test]
    fn profile_fields() {
        assert!(display_name(Some(&"x".repeat(64))).unwrap().is_some());
        assert!(display_name(Some(&"x".repeat(65))).is_err());
        assert!(avatar_url(Some("https://cdn.example/a.png")).is_ok());
        assert!(avatar_url(Some("http://cdn.example/a.png")).is_err());
        assert!(avatar_url(Some("https://")).is_err());
        assert!(avatar_url(Some("not a url")).is_err());
        let long = format!("https://e.x/{}", "a".repeat(2048));
        assert!(avatar_url(Some(&long)).is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert!(idempotency_key("abc-123").is_ok());
        assert!(idempotency_key("").is_err());
        assert!(idempotency_key(&"k".repeat(256)).is_err());
        assert!(idempotency_key("has space").is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn validation_never_panics_and_accepted_content_is_normalised(s in any::<String>()) {
            let _ = super::username(Some(&s));
            let _ = super::display_name(Some(&s));
            let _ = super::avatar_url(Some(&s));
            let _ = super::idempotency_key(&s);
            let _ = super::preferred_username(Some(&s));
            if let Ok(c) = super::content(Some(&s)) {
                prop_assert_eq!(c.trim(), c.as_str());
                prop_assert!((1..=super::CONTENT_MAX).contains(&c.chars().count()));
            }
        }
    }
}
