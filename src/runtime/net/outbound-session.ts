/**
 * One run's outbound HTTP on the main thread: the channel its worker sends
 * requests on, the counters its limits are kept in, and the daemon log line of
 * each request. The pool opens one per run whose policy grants network and
 * closes it when the run ends, however it ends; closing aborts what is in flight.
 */
import type { Logger } from "../../logger.js";
import type { NetworkGrant } from "../../policy/authorize.js";
import { systemResolver, type CidrRange, type Resolver } from "./address-rules.js";
import { HttpResult } from "./http-abi.js";
import { createHttpChannel, serveHttpChannel, type HttpChannelEnd } from "./http-channel.js";
import { performOutbound, type OutboundUsage } from "./outbound-http.js";

/** What a run's requests are checked against. */
export interface OutboundSettings {
  readonly grant: NetworkGrant;
  /** Special-purpose ranges the operator opened (--allow-private-network). */
  readonly opened: readonly CidrRange[];
  /** The policy's id, for the log. */
  readonly policyId: string;
  /** Name resolution; the system resolver when absent. */
  readonly resolver?: Resolver;
}

/** An open session: the end to send to the worker, and its close. */
export interface OutboundSession {
  /** Transfer its port with the run message. */
  readonly worker: HttpChannelEnd;
  close(): void;
}

/** Opens a run's session; every outbound request it carries is logged as one line. */
export function openOutboundSession(settings: OutboundSettings, logger: Logger): OutboundSession {
  const { main, worker } = createHttpChannel();
  const usage: OutboundUsage = { requests: 0, responseBytes: 0 };
  const ctx = {
    grant: settings.grant,
    opened: settings.opened,
    resolver: settings.resolver ?? systemResolver,
    usage,
    log: (entry: object) => logger.info("outbound http request", { policyId: settings.policyId, ...entry }),
  };
  const served = serveHttpChannel(main, (call, signal) =>
    performOutbound(call.head, call.body, ctx, signal).catch((e: unknown) => {
      logger.error("outbound http request failed inside the daemon", { error: String(e) });
      return { ok: false as const, result: HttpResult.FAILED, message: "the request failed inside the daemon; its log has the details" };
    }),
  );
  return { worker, close: served.close };
}
