export { createContextFilter, type ContextFilter } from "./filter.js";
export { contextHasFile, packContext, DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, FIXED_MTIME, type ContextTap, type ExtraFile, type PackOptions } from "./pack.js";
export { digestingStream } from "./digest.js";
