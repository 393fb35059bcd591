//! tonic's own answers to a request it could not read carry no
//! `ErrorInfo`, and their codes blame the server: a message over the size
//! limit is OUT_OF_RANGE, one that is not the method's protobuf INTERNAL.
//! They are rewritten, in the response's headers (a call refused before
//! its handler ran is a trailers-only response), into what the client did
//! wrong: RESOURCE_EXHAUSTED and INVALID_ARGUMENT, each with its reason,
//! as every other refusal of this service carries one.

use tonic::{Code, Status};

use super::status::refusal;

/// The reason of a request message over the size the server reads (4 MiB).
pub const REQUEST_TOO_LARGE_REASON: &str = "RequestSizeLimitExceeded";
/// The reason of a request that is not a message the method takes.
pub const MALFORMED_MESSAGE_REASON: &str = "InvalidParameterValue.MalformedMessage";

/// `response`, with tonic's codec refusals explained (see the module docs).
pub fn explain_codec_errors<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    // Statuses of this service carry their details; only tonic's lack them.
    if !headers.contains_key("grpc-status") || headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    let message = status.message();
    let explained = match status.code() {
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            refusal(
                Code::ResourceExhausted,
                format!("the request is larger than this server reads: {message}"),
                REQUEST_TOO_LARGE_REASON,
            )
        }
        Code::Internal if message.starts_with("failed to decode Protobuf message") => refusal(
            Code::InvalidArgument,
            format!("the request is not a message this method takes: {message}"),
            MALFORMED_MESSAGE_REASON,
        ),
        _ => return response,
    };
    headers.remove("grpc-message");
    if let Err(err) = explained.add_header(headers) {
        tracing::warn!(%err, "could not explain a codec refusal");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn answered(status: Status) -> Status {
        let response: http::Response<()> = explain_codec_errors(status.into_http());
        Status::from_header_map(response.headers()).expect("a status")
    }

    #[test]
    fn a_message_too_large_is_resource_exhausted_with_a_reason() {
        let status = answered(Status::out_of_range(
            "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_error_info().map(|info| info.reason),
            Some(REQUEST_TOO_LARGE_REASON.to_owned())
        );
        assert!(status.message().contains("found 5242880 bytes"));
    }

    #[test]
    fn an_undecodable_message_is_invalid_argument_with_a_reason() {
        let status = answered(Status::internal(
            "failed to decode Protobuf message: ShareImageRequest.account_id: invalid wire type",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_error_info().map(|info| info.reason),
            Some(MALFORMED_MESSAGE_REASON.to_owned())
        );
    }

    #[test]
    fn statuses_of_the_service_and_other_codes_pass_unchanged() {
        let ours = refusal(
            Code::Internal,
            "failed to decode Protobuf message".into(),
            "X",
        );
        assert_eq!(answered(ours.clone()).code(), Code::Internal);
        assert_eq!(
            answered(ours)
                .get_details_error_info()
                .map(|info| info.reason),
            Some("X".to_owned())
        );
        let other = answered(Status::out_of_range("min_position past the head"));
        assert_eq!(other.code(), Code::OutOfRange);
        let ok: http::Response<()> = explain_codec_errors(http::Response::new(()));
        assert!(ok.headers().is_empty());
    }
}
