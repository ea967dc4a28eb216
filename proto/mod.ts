/**
 * The protobuf wire contract: gRPC service definitions and codecs for internal log entries, built with protobufjs
 * from the generated descriptor. The server does not load grpc-js: grpc-js clients are in proto/grpc_js.ts.
 * This is the only module the server code should import from proto/.
 */
import protobuf from "protobufjs/light.js";
import { Buffer } from "node:buffer";
import { descriptor } from "./descriptor.ts";

import type { InternalRequestShape } from "./types.ts";

export * from "./types.ts";

/**
 * How messages convert to and from plain objects, everywhere (gRPC requests and responses, internal entries):
 * field names as in the .proto, int64 as decimal strings, enums as numbers, defaults filled, the oneof name set.
 */
export const CONVERSION = { keepCase: true, longs: String, enums: Number, defaults: true, oneofs: true } as const;

// toObject with `defaults` makes a new empty Buffer for every absent bytes field of every message (each one an
// off-heap allocation); a single shared empty Buffer serves them all: nothing can be written into it.
const EMPTY_BYTES = Buffer.alloc(0);
const newBuffer = protobuf.util.newBuffer;
protobuf.util.newBuffer = (sizeOrArray?: number | number[]) =>
  Array.isArray(sizeOrArray) && sizeOrArray.length === 0 ? EMPTY_BYTES : newBuffer(sizeOrArray);

/** protobufjs reflection root of every message and service. */
export const pbRoot: protobuf.Root = protobuf.Root.fromJSON(descriptor as unknown as protobuf.INamespace);
pbRoot.resolveAll();

/** One RPC of a service, in the shape grpc-js (addService, client constructors) and our GrpcServer take. */
export interface MethodDefinition {
  /** "/package.Service/Method" */
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  /** lowerCamelCase name (grpc-js also accepts handlers under it) */
  originalName: string;
  requestSerialize: (value: unknown) => Buffer;
  requestDeserialize: (bytes: Uint8Array) => unknown;
  responseSerialize: (value: unknown) => Buffer;
  responseDeserialize: (bytes: Uint8Array) => unknown;
}

/** Method name → definition. */
export type ServiceDefinition = Record<string, MethodDefinition>;

/** protobufjs encodes into a Buffer where one exists (as here); grpc-js requires one. */
const asBuffer = (b: Uint8Array): Buffer => Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);

function codec(type: protobuf.Type) {
  return {
    serialize: (value: unknown) => asBuffer(type.encode(type.fromObject(value as Record<string, unknown>)).finish()),
    // Decoding from a Buffer makes protobufjs slice bytes fields as Buffers, as grpc-js hands them to handlers.
    deserialize: (bytes: Uint8Array) => type.toObject(type.decode(bytes), CONVERSION),
  };
}

function serviceDefinition(name: string): ServiceDefinition {
  const def: ServiceDefinition = {};
  for (const m of pbRoot.lookupService(name).methodsArray) {
    const req = codec(m.resolvedRequestType!);
    const res = codec(m.resolvedResponseType!);
    def[m.name] = {
      path: `/${name}/${m.name}`,
      requestStream: !!m.requestStream,
      responseStream: !!m.responseStream,
      originalName: m.name[0].toLowerCase() + m.name.slice(1),
      requestSerialize: req.serialize,
      requestDeserialize: req.deserialize,
      responseSerialize: res.serialize,
      responseDeserialize: res.deserialize,
    };
  }
  return def;
}

/** etcdserverpb.KV */
export const KVService: ServiceDefinition = serviceDefinition("etcdserverpb.KV");
/** etcdserverpb.Watch */
export const WatchService: ServiceDefinition = serviceDefinition("etcdserverpb.Watch");
/** etcdserverpb.Lease */
export const LeaseService: ServiceDefinition = serviceDefinition("etcdserverpb.Lease");
/** etcdserverpb.Cluster */
export const ClusterService: ServiceDefinition = serviceDefinition("etcdserverpb.Cluster");
/** etcdserverpb.Maintenance */
export const MaintenanceService: ServiceDefinition = serviceDefinition("etcdserverpb.Maintenance");
/** etcdserverpb.Auth */
export const AuthService: ServiceDefinition = serviceDefinition("etcdserverpb.Auth");
/** egpb.Raft: the peer service among primaries. */
export const RaftService: ServiceDefinition = serviceDefinition("egpb.Raft");
/** grpc.health.v1.Health */
export const HealthService: ServiceDefinition = serviceDefinition("grpc.health.v1.Health");

/** egpb.Request: the payload of one replicated log entry. */
export const InternalRequest: protobuf.Type = pbRoot.lookupType("egpb.Request");

/** Encodes an egpb.Request given in the same plain-object shape grpc handlers receive. */
export function encodeInternal(obj: object): Uint8Array {
  return InternalRequest.encode(InternalRequest.fromObject(obj)).finish();
}

/**
 * Decodes an egpb.Request into the shape grpc handlers receive: keepCase names, int64 as decimal
 * strings, bytes as Buffer, defaults filled and the oneof name set (`op: "put"`).
 */
export function decodeInternal(bytes: Uint8Array): InternalRequestShape {
  // Decoding from a Buffer makes protobufjs slice bytes fields as Buffers, as grpc-js does.
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return InternalRequest.toObject(InternalRequest.decode(buf), CONVERSION) as InternalRequestShape;
}
