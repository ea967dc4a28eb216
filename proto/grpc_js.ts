/**
 * grpc-js client constructors for every service, built from proto/mod.ts's definitions: for tests and scripts, which
 * check the server against a stock client. The server itself does not load grpc-js (its etcd client is
 * server/etcdclient/client.ts, on our own transport).
 */
import * as grpc from "@grpc/grpc-js";
import {
  AuthService,
  ClusterService,
  HealthService,
  KVService,
  LeaseService,
  MaintenanceService,
  RaftService,
  type ServiceDefinition,
  WatchService,
} from "./mod.ts";

// deno-lint-ignore no-explicit-any
type Loose = any;

const client = (def: ServiceDefinition, name: string): Loose =>
  grpc.makeGenericClientConstructor(def as unknown as grpc.ServiceDefinition, name);

/** Client constructors by package, e.g. `new grpcRoot.etcdserverpb.KV(address, credentials)`. */
export const grpcRoot: Loose = {
  etcdserverpb: {
    KV: client(KVService, "KV"),
    Watch: client(WatchService, "Watch"),
    Lease: client(LeaseService, "Lease"),
    Cluster: client(ClusterService, "Cluster"),
    Maintenance: client(MaintenanceService, "Maintenance"),
    Auth: client(AuthService, "Auth"),
  },
  egpb: { Raft: client(RaftService, "Raft") },
  grpc: { health: { v1: { Health: client(HealthService, "Health") } } },
};
