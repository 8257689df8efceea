/**
 * Every RPC the broker's one port serves: the three jobwire services, read
 * from their descriptors (so RPCs added to the .proto are fuzzed as soon as
 * the generated code has them), and gRPC server reflection, v1 and v1alpha.
 */
import type { DescMessage, DescService } from "@bufbuild/protobuf";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { ServerReflection as ReflectionV1 } from "@jobwire/proto/grpc/reflection/v1/reflection_pb";
import { ServerReflection as ReflectionV1alpha } from "@jobwire/proto/grpc/reflection/v1alpha/reflection_pb";

export interface Rpc {
  /** "JobService/Enqueue", as printed. */
  name: string;
  path: string;
  input: DescMessage;
  output: DescMessage;
  streaming: boolean;
}

function rpcsOf(service: DescService, short: string): Rpc[] {
  return service.methods.map((m) => ({
    name: `${short}/${m.name}`,
    path: `/${service.typeName}/${m.name}`,
    input: m.input,
    output: m.output,
    streaming: m.methodKind !== "unary",
  }));
}

export const RPCS: Rpc[] = [
  ...rpcsOf(JobService, "JobService"),
  ...rpcsOf(WorkerService, "WorkerService"),
  ...rpcsOf(AdminService, "AdminService"),
  ...rpcsOf(ReflectionV1, "reflection.v1"),
  ...rpcsOf(ReflectionV1alpha, "reflection.v1alpha"),
];
