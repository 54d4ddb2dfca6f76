//! `${NAME}` references in a tool's header values (`"Bearer ${GITHUB_TOKEN}"`). Only variables
//! listed in `JOBYARD_TOOL_SECRETS` may be referenced: anything else is refused when the tool
//! is stored, so that API access cannot send `${REDIS_URL}` or the API token to a URL of its
//! choosing. References are resolved only when a request is made; the stored and shown
//! configuration keeps them as written.

/// Why a header value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `${` without a valid name and a closing `}`.
    #[error("'${{' must be followed by a variable name and '}}'")]
    Malformed,
    /// A variable outside `JOBYARD_TOOL_SECRETS`.
    #[error("variable '{0}' is not listed in JOBYARD_TOOL_SECRETS")]
    NotAllowed(String),
    /// A listed variable that is not set when the request is made.
    #[error("variable '{0}' is not set")]
    Unset(String),
}

/// The variables `value` references, in order.
pub fn references(value: &str) -> Result<Vec<&str>, SecretError> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(SecretError::Malformed)?;
        let name = &after[..end];
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(SecretError::Malformed);
        }
        names.push(name);
        rest = &after[end + 1..];
    }
    Ok(names)
}

/// Checks that `value` references only `allowed` variables.
pub fn check(value: &str, allowed: &[String]) -> Result<(), SecretError> {
    for name in references(value)? {
        if !allowed.iter().any(|a| a == name) {
            return Err(SecretError::NotAllowed(name.to_owned()));
        }
    }
    Ok(())
}

/// `value` with its references replaced by what `lookup` gives (checked against `allowed`
/// again: a configuration stored before the list shrank must not resolve what it no longer
/// may).
pub fn resolve(
    value: &str,
    allowed: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, SecretError> {
    check(value, allowed)?;
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(SecretError::Malformed)?;
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| SecretError::Unset(name.to_owned()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_variables_are_referenced_and_resolved() {
        let allowed = vec!["GITHUB_TOKEN".to_owned()];
        assert_eq!(references("Bearer ${GITHUB_TOKEN}").unwrap(), ["GITHUB_TOKEN"]);
        assert_eq!(references("no $ refs {}").unwrap(), Vec::<&str>::new());
        assert!(check("Bearer ${GITHUB_TOKEN}", &allowed).is_ok());
        assert_eq!(
            check("${REDIS_URL}", &allowed),
            Err(SecretError::NotAllowed("REDIS_URL".into()))
        );
        assert_eq!(check("${GITHUB_TOKEN", &allowed), Err(SecretError::Malformed));
        assert_eq!(check("${1X}", &allowed), Err(SecretError::Malformed));
        let lookup = |name: &str| (name == "GITHUB_TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(resolve("Bearer ${GITHUB_TOKEN}!", &allowed, lookup).unwrap(), "Bearer s3cret!");
        assert_eq!(
            resolve("${GITHUB_TOKEN}", &allowed, |_| None),
            Err(SecretError::Unset("GITHUB_TOKEN".into()))
        );
        assert!(resolve("${HOME}", &allowed, |_| Some("x".into())).is_err());
    }
}
