/**
 * gRPC server metrics under go-grpc-prometheus's names and labels (what etcd 3.4 exports and etcd dashboards graph):
 * grpc_server_started_total, grpc_server_handled_total, grpc_server_msg_received_total, grpc_server_msg_sent_total;
 * and etcd's etcd_network_client_grpc_{received,sent}_bytes_total (message bytes, the 5-byte gRPC prefix included).
 * Every method's series exist from registration on (handled: one per status code), as go-grpc-prometheus
 * pre-registers them, so rate() over a method that was never called reads 0 instead of nothing.
 */
import { type Counter, type CounterChild, Registry } from "./registry.ts";

/** Go's codes.Code names, by number: the grpc_code label values. */
export const GRPC_CODE_NAMES: readonly string[] = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
];

/** grpc_type label values. */
export type GrpcType = "unary" | "client_stream" | "server_stream" | "bidi_stream";

/** The counters of one method, resolved once when the method is registered. */
export class MethodStats {
  readonly #handled: CounterChild[];
  constructor(
    readonly started: CounterChild,
    handled: CounterChild[],
    readonly received: CounterChild,
    readonly sent: CounterChild,
    readonly receivedBytes: CounterChild,
    readonly sentBytes: CounterChild,
  ) {
    this.#handled = handled;
  }

  /** One request message of `bytes` (after its 5-byte prefix) arrived. */
  messageIn(bytes: number): void {
    this.received.value++;
    this.receivedBytes.value += bytes + 5;
  }

  /** One response message of `bytes` (its 5-byte prefix included) left. */
  messageOut(bytes: number): void {
    this.sent.value++;
    this.sentBytes.value += bytes;
  }
  /** Counts a finished call by its status code. */
  handled(code: number): void {
    (this.#handled[code] ?? this.#handled[2]).inc(); // an out-of-range code counts as Unknown
  }
}

/** The grpc_server_* families of one registry. */
export class GrpcServerMetrics {
  readonly #started: Counter;
  readonly #handled: Counter;
  readonly #received: Counter;
  readonly #sent: Counter;
  readonly #methods = new Map<string, MethodStats>();
  /** etcd_network_client_grpc_received_bytes_total: request message bytes of every method */
  readonly receivedBytes: CounterChild;
  /** etcd_network_client_grpc_sent_bytes_total: response message bytes of every method */
  readonly sentBytes: CounterChild;

  constructor(registry: Registry) {
    this.receivedBytes = registry.counter(
      "etcd_network_client_grpc_received_bytes_total",
      "The total number of bytes received from grpc clients.",
    ).labels();
    this.sentBytes = registry.counter(
      "etcd_network_client_grpc_sent_bytes_total",
      "The total number of bytes sent to grpc clients.",
    ).labels();
    const labels = ["grpc_type", "grpc_service", "grpc_method"];
    this.#started = registry.counter(
      "grpc_server_started_total",
      "Total number of RPCs started on the server.",
      labels,
    );
    this.#handled = registry.counter(
      "grpc_server_handled_total",
      "Total number of RPCs completed on the server, regardless of success or failure.",
      [...labels, "grpc_code"],
    );
    this.#received = registry.counter(
      "grpc_server_msg_received_total",
      "Total number of RPC stream messages received on the server.",
      labels,
    );
    this.#sent = registry.counter(
      "grpc_server_msg_sent_total",
      "Total number of gRPC stream messages sent by the server.",
      labels,
    );
  }

  /** The stats of a method given by its path ("/etcdserverpb.KV/Put"); the same object for the same path. */
  method(path: string, type: GrpcType): MethodStats {
    let m = this.#methods.get(path);
    if (m) return m;
    const slash = path.lastIndexOf("/");
    const service = path.slice(1, slash), method = path.slice(slash + 1);
    m = new MethodStats(
      this.#started.labels(type, service, method),
      GRPC_CODE_NAMES.map((code) => this.#handled.labels(type, service, method, code)),
      this.#received.labels(type, service, method),
      this.#sent.labels(type, service, method),
      this.receivedBytes,
      this.sentBytes,
    );
    this.#methods.set(path, m);
    return m;
  }
}
