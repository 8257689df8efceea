/**
 * The worker's logging seam. Pass your own (pino, winston and console all
 * fit) through WorkerOptions.logger; the default writes warnings and errors
 * to stderr and drops debug and info.
 */
export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export const consoleLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: (msg) => console.warn(`jobwire: ${msg}`),
  error: (msg) => console.error(`jobwire: ${msg}`),
};

export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
};
