//! Kubernetes API errors sorted in one place, for every crate that talks to the API server
//! (the coordinator's Lease and ring writes, the operator's cycles and its health report).

/// What a failed Kubernetes API call means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiErrorKind {
    /// 409: a compare-and-swap lost (the object changed since it was read) or it already
    /// exists. Read again before writing again.
    Conflict,
    /// 404 or 410: the object (or the watch's version) is gone.
    NotFound,
    /// 429: the API server asks the caller to slow down. Transient.
    Throttled,
    /// 401 or 403: credentials or RBAC refused (also briefly while an API server restarts).
    Forbidden,
    /// Any other 4xx (400, 422, ...): the request itself is wrong; the same request fails
    /// again until what it was built from changes.
    Invalid,
    /// 5xx: the API server failed. Transient.
    ServerError,
    /// No answer: a connection, TLS or timeout failure. Transient.
    Unreachable,
}

impl ApiErrorKind {
    /// Sorts an error of the kube client.
    pub fn of(e: &kube::Error) -> ApiErrorKind {
        match e {
            kube::Error::Api(s) => ApiErrorKind::of_status(s),
            _ => ApiErrorKind::Unreachable,
        }
    }

    /// Sorts a status the API server answered with.
    pub fn of_status(s: &kube::core::Status) -> ApiErrorKind {
        match s.code {
            409 => ApiErrorKind::Conflict,
            404 | 410 => ApiErrorKind::NotFound,
            429 => ApiErrorKind::Throttled,
            401 | 403 => ApiErrorKind::Forbidden,
            400..=499 => ApiErrorKind::Invalid,
            _ => ApiErrorKind::ServerError,
        }
    }

    /// Whether the same call may succeed later without anything changing (throttling, a
    /// server error, no answer).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ApiErrorKind::Throttled | ApiErrorKind::ServerError | ApiErrorKind::Unreachable
        )
    }

    /// Whether the API server refused the request for what it says or who sent it (a 4xx
    /// other than a lost compare-and-swap or throttling): the user's to fix.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            ApiErrorKind::NotFound | ApiErrorKind::Forbidden | ApiErrorKind::Invalid
        )
    }
}

/// Whether the error is a 409 (a compare-and-swap lost, or AlreadyExists).
pub fn is_conflict(e: &kube::Error) -> bool {
    ApiErrorKind::of(e) == ApiErrorKind::Conflict
}

/// Whether the error says the object is gone (404, 410).
pub fn is_not_found(e: &kube::Error) -> bool {
    ApiErrorKind::of(e) == ApiErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn every_status_code_has_one_kind() {
        use ApiErrorKind::*;
        for (code, kind) in [
            (409, Conflict),
            (404, NotFound),
            (410, NotFound),
            (429, Throttled),
            (401, Forbidden),
            (403, Forbidden),
            (400, Invalid),
            (422, Invalid),
            (405, Invalid),
            (500, ServerError),
            (503, ServerError),
        ] {
            assert_eq!(ApiErrorKind::of(&api(code)), kind, "{code}");
        }
        assert!(is_conflict(&api(409)) && !is_conflict(&api(404)));
        assert!(is_not_found(&api(404)) && !is_not_found(&api(409)));
        assert!(
            Throttled.is_transient() && ServerError.is_transient() && Unreachable.is_transient()
        );
        assert!(!Conflict.is_transient() && !Invalid.is_transient());
        assert!(Invalid.is_refusal() && Forbidden.is_refusal() && NotFound.is_refusal());
        assert!(!Conflict.is_refusal() && !Throttled.is_refusal());
    }
}
