export { RealtimeServer, startRealtimeServer, parseDropSpec, dropSlot, type RealtimeServerOptions, type RealtimeStats, type DroppedChange } from './server';
export { signProjectToken, signAnonKey, signToken, verifyToken, TokenError, type TokenClaims, type TokenErrorCode } from './tokens';
export {
  LiveLog,
  openRealtimeClient,
  closeRealtimeClient,
  type LiveEvent,
  type LiveGap,
  type LiveScope,
  type LiveStatus,
  type CaughtUpEvent,
  type LiveLogOptions,
  type OpenRealtimeClientOptions,
} from './live-log';
export type { FeedState } from './feed';
