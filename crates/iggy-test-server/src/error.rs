//! The error codes the server answers with: Iggy's own (`IggyError::as_code`), so the
//! client turns them into the same errors a real server would cause.

/// An `IggyError` code, sent in the reply header's `status`.
pub(crate) type ErrorCode = u32;

/// The codes used here, named after their `IggyError` variants.
pub(crate) mod codes {
    use super::ErrorCode;

    pub(crate) const ERROR: ErrorCode = 1;
    pub(crate) const INVALID_COMMAND: ErrorCode = 3;
    pub(crate) const INVALID_FORMAT: ErrorCode = 4;
    pub(crate) const FEATURE_UNAVAILABLE: ErrorCode = 5;
    pub(crate) const RESOURCE_NOT_FOUND: ErrorCode = 20;
    pub(crate) const UNAUTHENTICATED: ErrorCode = 40;
    pub(crate) const INVALID_CREDENTIALS: ErrorCode = 42;
    pub(crate) const INVALID_PERSONAL_ACCESS_TOKEN: ErrorCode = 53;
    pub(crate) const PERSONAL_ACCESS_TOKEN_ALREADY_EXISTS: ErrorCode = 51;
    pub(crate) const STREAM_NOT_FOUND: ErrorCode = 1009;
    pub(crate) const STREAM_NAME_EXISTS: ErrorCode = 1012;
    pub(crate) const TOPIC_NOT_FOUND: ErrorCode = 2010;
    pub(crate) const TOPIC_NAME_EXISTS: ErrorCode = 2013;
    pub(crate) const TOO_MANY_PARTITIONS: ErrorCode = 2015;
    pub(crate) const PARTITION_NOT_FOUND: ErrorCode = 3007;
    pub(crate) const CONSUMER_OFFSET_NOT_FOUND: ErrorCode = 3021;
    pub(crate) const INVALID_MESSAGES_COUNT: ErrorCode = 4009;
    pub(crate) const CANNOT_APPEND_MESSAGE: ErrorCode = 4010;
    pub(crate) const CONSUMER_GROUP_NOT_FOUND: ErrorCode = 5000;
    pub(crate) const CONSUMER_GROUP_NAME_EXISTS: ErrorCode = 5004;
    pub(crate) const CONSUMER_GROUP_MEMBER_NOT_FOUND: ErrorCode = 5006;
}

#[cfg(test)]
mod tests {
    use super::codes::*;
    use iggy_common::IggyError;

    #[test]
    fn codes_match_the_iggy_errors_they_stand_for() {
        let expected = [
            (ERROR, "Error"),
            (INVALID_COMMAND, "InvalidCommand"),
            (INVALID_FORMAT, "InvalidFormat"),
            (FEATURE_UNAVAILABLE, "FeatureUnavailable"),
            (RESOURCE_NOT_FOUND, "ResourceNotFound"),
            (UNAUTHENTICATED, "Unauthenticated"),
            (INVALID_CREDENTIALS, "InvalidCredentials"),
            (INVALID_PERSONAL_ACCESS_TOKEN, "InvalidPersonalAccessToken"),
            (
                PERSONAL_ACCESS_TOKEN_ALREADY_EXISTS,
                "PersonalAccessTokenAlreadyExists",
            ),
            (STREAM_NOT_FOUND, "StreamIdNotFound"),
            (STREAM_NAME_EXISTS, "StreamNameAlreadyExists"),
            (TOPIC_NOT_FOUND, "TopicIdNotFound"),
            (TOPIC_NAME_EXISTS, "TopicNameAlreadyExists"),
            (TOO_MANY_PARTITIONS, "TooManyPartitions"),
            (PARTITION_NOT_FOUND, "PartitionNotFound"),
            (CONSUMER_OFFSET_NOT_FOUND, "ConsumerOffsetNotFound"),
            (INVALID_MESSAGES_COUNT, "InvalidMessagesCount"),
            (CANNOT_APPEND_MESSAGE, "CannotAppendMessage"),
            (CONSUMER_GROUP_NOT_FOUND, "ConsumerGroupIdNotFound"),
            (CONSUMER_GROUP_NAME_EXISTS, "ConsumerGroupNameAlreadyExists"),
            (
                CONSUMER_GROUP_MEMBER_NOT_FOUND,
                "ConsumerGroupMemberNotFound",
            ),
        ];
        for (code, variant) in expected {
            let error = IggyError::from_code(code);
            assert_eq!(error.as_code(), code, "{variant}");
            let debug = format!("{error:?}");
            assert!(
                debug.starts_with(variant),
                "{code}: {debug} is not {variant}"
            );
        }
    }
}
