import type { FastifyError, FastifyErrorConstructor } from '@fastify/error'
import { describe, expect, test } from 'tstyche'
import * as api from 'fastify-event-socket'

// Users match on `err.code` and answer with `err.statusCode`; both are typed as
// literals, so the README's errors table is checked here. One line per error.
type ErrorOf<Code extends string, Status extends number> = FastifyErrorConstructor<{ code: Code, statusCode: Status }>

type Api = typeof api
type ErrorExports = { [K in keyof Api as K extends `${string}Error` ? K : never]: Api[K] }

describe('exported errors', () => {
  test('each has its stable code and HTTP status', () => {
    expect(api.NoTokenError).type.toBe<ErrorOf<'FST_EVSOCK_NO_TOKEN', 401>>()
    expect(api.BadTokenError).type.toBe<ErrorOf<'FST_EVSOCK_BAD_TOKEN', 401>>()
    expect(api.TokenExpiredError).type.toBe<ErrorOf<'FST_EVSOCK_TOKEN_EXPIRED', 401>>()
    expect(api.TokenRevokedError).type.toBe<ErrorOf<'FST_EVSOCK_TOKEN_REVOKED', 401>>()
    expect(api.TokenUntrustedError).type.toBe<ErrorOf<'FST_EVSOCK_TOKEN_UNTRUSTED', 401>>()
    expect(api.ForbiddenOriginError).type.toBe<ErrorOf<'FST_EVSOCK_FORBIDDEN_ORIGIN', 403>>()
    expect(api.UnsupportedProtocolError).type.toBe<ErrorOf<'FST_EVSOCK_UNSUPPORTED_PROTOCOL', 400>>()
    expect(api.BusyError).type.toBe<ErrorOf<'FST_EVSOCK_BUSY', 503>>()
    expect(api.HandshakeRateLimitedError).type.toBe<ErrorOf<'FST_EVSOCK_RATE_LIMITED', 429>>()
    expect(api.UpgradeRequiredError).type.toBe<ErrorOf<'FST_EVSOCK_UPGRADE_REQUIRED', 426>>()
    expect(api.BadTopicError).type.toBe<ErrorOf<'FST_EVSOCK_BAD_TOPIC', 400>>()
    expect(api.BadEventIdError).type.toBe<ErrorOf<'FST_EVSOCK_BAD_EVENT_ID', 400>>()
    expect(api.PayloadTooLargeError).type.toBe<ErrorOf<'FST_EVSOCK_PAYLOAD_TOO_LARGE', 413>>()
    expect(api.NotSerializableError).type.toBe<ErrorOf<'FST_EVSOCK_NOT_SERIALIZABLE', 400>>()
    expect(api.TooDeepError).type.toBe<ErrorOf<'FST_EVSOCK_TOO_DEEP', 400>>()
    expect(api.BrokerUnavailableError).type.toBe<ErrorOf<'FST_EVSOCK_BROKER_UNAVAILABLE', 503>>()
    expect(api.PublishNackedError).type.toBe<ErrorOf<'FST_EVSOCK_PUBLISH_NACKED', 503>>()
    expect(api.ClosedError).type.toBe<ErrorOf<'FST_EVSOCK_CLOSED', 503>>()
    expect(api.BadOptionError).type.toBe<ErrorOf<'FST_EVSOCK_BAD_OPTION', 500>>()
  })

  test('every export named *Error is a FastifyError constructor with an FST_EVSOCK_ code and a status', () => {
    expect<ErrorExports[keyof ErrorExports]>().type.toBeAssignableTo<FastifyErrorConstructor<{ code: `FST_EVSOCK_${string}`, statusCode: number }>>()
  })

  test('instances are FastifyErrors, built with or without new', () => {
    expect(new api.BadTopicError('a..b', 'empty word')).type.toBeAssignableTo<FastifyError & { code: 'FST_EVSOCK_BAD_TOPIC', statusCode: 400 }>()
    expect(api.ClosedError()).type.toBeAssignableTo<Error & { code: 'FST_EVSOCK_CLOSED', statusCode: 503 }>()
    expect(new api.ClosedError().code).type.toBe<'FST_EVSOCK_CLOSED'>()
    expect(new api.PayloadTooLargeError(300_000, 204_800).statusCode).type.toBe<413>()
  })
})
