/** WebSocket close codes of docs/protocol.md section 7, shared by the client and the server. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  TooBig: 1009,
  InternalError: 1011,
  TryAgainLater: 1013,
  TokenExpired: 4001,
  TooManyBadFrames: 4002,
  SlowConsumer: 4008,
  RateLimited: 4029
} as const

export type CloseCodeValue = typeof CloseCode[keyof typeof CloseCode]
