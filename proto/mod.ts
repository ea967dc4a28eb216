/**
 * The protobuf wire contract: gRPC service definitions for grpc-js and codecs for internal log entries.
 * This is the only module the rest of the code should import from proto/.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { Buffer } from "node:buffer";
import { descriptor } from "./descriptor.ts";

import type { InternalRequestShape } from "./types.ts";

export * from "./types.ts";

/** Conversion options shared by the gRPC layer and the internal codec (keep them identical). */
export const CONVERSION = { keepCase: true, longs: String, enums: Number, defaults: true, oneofs: true } as const;

/** proto-loader package definition built from the generated descriptor. */
export const packageDefinition: protoLoader.PackageDefinition = protoLoader.fromJSON(
  descriptor as unknown as protobuf.INamespace,
  CONVERSION,
);

// deno-lint-ignore no-explicit-any
type Loose = any;

/** grpc-js object tree (e.g. `grpcRoot.etcdserverpb.KV`), typed loosely. */
export const grpcRoot: Loose = grpc.loadPackageDefinition(packageDefinition);

/** Service definitions usable with `grpc.Server.addService`. */
export const KVService: grpc.ServiceDefinition = grpcRoot.etcdserverpb.KV.service;
/** Watch service definition. */
export const WatchService: grpc.ServiceDefinition = grpcRoot.etcdserverpb.Watch.service;
/** Lease service definition. */
export const LeaseService: grpc.ServiceDefinition = grpcRoot.etcdserverpb.Lease.service;
/** Cluster service definition. */
export const ClusterService: grpc.ServiceDefinition = grpcRoot.etcdserverpb.Cluster.service;
/** Maintenance service definition. */
export const MaintenanceService: grpc.ServiceDefinition = grpcRoot.etcdserverpb.Maintenance.service;
/** Auth service definition. */
export const AuthService: grpc.ServiceDefinition = grpcRoot.etcdserverpb.Auth.service;
/** egpb.Raft: the peer service among primaries. */
export const RaftService: grpc.ServiceDefinition = grpcRoot.egpb.Raft.service;
/** grpc.health.v1.Health service definition. */
export const HealthService: grpc.ServiceDefinition = grpcRoot.grpc.health.v1.Health.service;

/** protobufjs reflection root of every message (for internal encoding). */
export const pbRoot: protobuf.Root = protobuf.Root.fromJSON(descriptor as unknown as protobuf.INamespace);

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
