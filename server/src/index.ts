/** The broker as a library: start it in-process, or use its parts. */
export { startApp, type App, type AppOptions } from "./app.js";
export { loadConfig, ConfigError, type Config } from "./config.js";
export { Broker, type BrokerHooks } from "./broker/broker.js";
export { BrokerError } from "./errors.js";
export { createLogger, silentLogger, type Logger } from "./log.js";
export { startEmbedded, type EmbeddedPostgres } from "./store/embedded.js";
export { migrate } from "./store/migrate.js";
export type { Job, JobState } from "./model.js";
