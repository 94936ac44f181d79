import createError from '@fastify/error'

// Every error the plugin raises comes from here, so that each code is stable
// and documented in one place (README "Errors"). Handshake refusals carry the
// HTTP status of docs/protocol.md section 1; the others are thrown to callers.

// Handshake refusals (sent as the HTTP response, never after an upgrade).
export const NoTokenError = createError('FST_EVSOCK_NO_TOKEN', 'No access token was presented', 401)
export const BadTokenError = createError('FST_EVSOCK_BAD_TOKEN', 'The access token is invalid: %s', 401)
export const TokenExpiredError = createError('FST_EVSOCK_TOKEN_EXPIRED', 'The access token is expired or not yet valid', 401)
export const TokenRevokedError = createError('FST_EVSOCK_TOKEN_REVOKED', 'The access token was revoked', 401)
export const TokenUntrustedError = createError('FST_EVSOCK_TOKEN_UNTRUSTED', 'The access token is not trusted', 401)
export const ForbiddenOriginError = createError('FST_EVSOCK_FORBIDDEN_ORIGIN', 'Origin %s is not allowed', 403)
export const UnsupportedProtocolError = createError('FST_EVSOCK_UNSUPPORTED_PROTOCOL', 'None of the offered subprotocols is a supported format (evsock.v1.json, evsock.v1.msgpack)', 400)
export const BusyError = createError('FST_EVSOCK_BUSY', 'The connection limit of this instance is reached', 503)
export const HandshakeRateLimitedError = createError('FST_EVSOCK_RATE_LIMITED', 'Too many connection attempts from this address', 429)
export const UpgradeRequiredError = createError('FST_EVSOCK_UPGRADE_REQUIRED', 'This route only accepts WebSocket upgrades', 426)

// Publishing.
export const BadTopicError = createError('FST_EVSOCK_BAD_TOPIC', 'Invalid topic %j: %s', 400)
export const BadEventIdError = createError('FST_EVSOCK_BAD_EVENT_ID', 'options.id must be a string of 1 to 128 characters, at most 255 bytes in UTF-8, without lone surrogates', 400)
export const PayloadTooLargeError = createError('FST_EVSOCK_PAYLOAD_TOO_LARGE', 'The encoded event is %d bytes, over the limit of %d', 413)
export const NotSerializableError = createError('FST_EVSOCK_NOT_SERIALIZABLE', 'The event data cannot be encoded as JSON: %s', 400)
export const TooDeepError = createError('FST_EVSOCK_TOO_DEEP', 'The event data is nested deeper than the limit of %d', 400)
export const BrokerUnavailableError = createError('FST_EVSOCK_BROKER_UNAVAILABLE', 'The broker is unavailable: %s', 503)
export const PublishNackedError = createError('FST_EVSOCK_PUBLISH_NACKED', 'The broker refused the event', 503)
export const ClosedError = createError('FST_EVSOCK_CLOSED', 'The event socket is closed', 503)

// Configuration.
export const BadOptionError = createError('FST_EVSOCK_BAD_OPTION', 'Invalid option %s: %s', 500, TypeError)
export const MetricsDisabledError = createError('FST_EVSOCK_METRICS_DISABLED', 'Metrics are off: register the plugin with metrics: true (prom-client installed)', 500)
