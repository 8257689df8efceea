import { create, createRegistry, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "@jobwire/proto/grpc/reflection/v1/reflection_pb";
import * as v1alpha from "@jobwire/proto/grpc/reflection/v1alpha/reflection_pb";

/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), so that buf curl
 * and grpcurl can call the broker without local proto files. It answers
 * from the descriptors compiled into the generated code.
 */

/** NOT_FOUND, as the reflection protocol's error_code expects. */
const GRPC_NOT_FOUND = 5;
const GRPC_UNIMPLEMENTED = 12;

class Descriptors {
  private readonly registry;
  private readonly byName = new Map<string, DescFile>();

  constructor(readonly services: DescService[]) {
    const files = new Set<DescFile>();
    const add = (f: DescFile) => {
      if (files.has(f)) return;
      files.add(f);
      f.dependencies.forEach(add);
    };
    for (const s of services) add(s.file);
    for (const f of files) this.byName.set(f.proto.name, f);
    this.registry = createRegistry(...files);
  }

  /** The file and everything it imports, each serialized once. */
  private withDeps(file: DescFile): Uint8Array[] {
    const seen = new Set<DescFile>();
    const out: Uint8Array[] = [];
    const walk = (f: DescFile) => {
      if (seen.has(f)) return;
      seen.add(f);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(walk);
    };
    walk(file);
    return out;
  }

  byFilename(name: string): Uint8Array[] | null {
    const f = this.byName.get(name);
    return f ? this.withDeps(f) : null;
  }

  bySymbol(symbol: string): Uint8Array[] | null {
    const found = this.registry.get(symbol);
    if (found && "file" in found) return this.withDeps(found.file);
    // A method: "pkg.Service.Method".
    const dot = symbol.lastIndexOf(".");
    const svc = dot > 0 ? this.registry.getService(symbol.slice(0, dot)) : undefined;
    if (svc?.methods.some((m) => m.name === symbol.slice(dot + 1))) return this.withDeps(svc.file);
    return null;
  }
}

type Api = typeof v1 | typeof v1alpha;

function serve(api: Api, d: Descriptors, router: ConnectRouter): void {
  type Req = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;
  const respond = (req: Req, body: Record<string, unknown>) =>
    create(api.ServerReflectionResponseSchema as typeof v1.ServerReflectionResponseSchema, {
      validHost: req.host,
      originalRequest: req as v1.ServerReflectionRequest,
      messageResponse: body as v1.ServerReflectionResponse["messageResponse"],
    });
  const files = (req: Req, found: Uint8Array[] | null, what: string) =>
    found
      ? respond(req, { case: "fileDescriptorResponse", value: { fileDescriptorProto: found } })
      : respond(req, { case: "errorResponse", value: { errorCode: GRPC_NOT_FOUND, errorMessage: `${what} not found` } });

  router.service(api.ServerReflection as typeof v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        const m = req.messageRequest;
        switch (m.case) {
          case "listServices":
            yield respond(req, {
              case: "listServicesResponse",
              value: { service: d.services.map((s) => ({ name: s.typeName })) },
            });
            break;
          case "fileByFilename":
            yield files(req, d.byFilename(m.value), `file ${m.value}`);
            break;
          case "fileContainingSymbol":
            yield files(req, d.bySymbol(m.value), `symbol ${m.value}`);
            break;
          case "allExtensionNumbersOfType":
            yield respond(req, { case: "allExtensionNumbersResponse", value: { baseTypeName: m.value, extensionNumber: [] } });
            break;
          default:
            yield respond(req, {
              case: "errorResponse",
              value: { errorCode: GRPC_UNIMPLEMENTED, errorMessage: "extensions are not served" },
            });
        }
      }
    },
  });
}

export function registerReflection(router: ConnectRouter, services: DescService[]): void {
  const d = new Descriptors([...services, v1.ServerReflection, v1alpha.ServerReflection as unknown as DescService]);
  serve(v1, d, router);
  serve(v1alpha, d, router);
}
