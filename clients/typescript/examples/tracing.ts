/**
 * Optional OpenTelemetry setup for the examples. @jobwire/client only uses
 * @opentelemetry/api; exporting spans is the application's choice. With
 * OTEL_EXPORTER_OTLP_ENDPOINT set (for example http://localhost:4318, the
 * Jaeger of the repo's docker-compose.yml), spans go there over OTLP/HTTP;
 * without it, nothing is set up and tracing costs nothing.
 *
 * Import this module first, before anything that creates spans.
 */
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

let provider: NodeTracerProvider | undefined;

export function startTracing(defaultServiceName: string): void {
  if (!process.env.OTEL_EXPORTER_OTLP_ENDPOINT) return;
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": process.env.OTEL_SERVICE_NAME ?? defaultServiceName }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  // Also installs the W3C trace-context propagator and an AsyncLocalStorage
  // context manager, which the client's header injection relies on.
  provider.register();
}

/** Flushes buffered spans; call before the process exits. */
export async function stopTracing(): Promise<void> {
  await provider?.shutdown();
}
