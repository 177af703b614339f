export { GENERATOR_VERSION, generateDockerfile, lastFilesystemStep, quoteLabelText, type DockerfileSpec } from "./dockerfile.js";
export { buildLabels, type LabelInput } from "./labels.js";
export { disallowedBaseImages, extractBaseImages, normalizeImageReference, normalizeRegistryHost, UnresolvableDockerfile, type BaseImage } from "./from.js";
export { APT_TXT_MAX_BYTES, LAYOUTS, isAptSourceLine, isDebianPackageName, parseAptTxt, type Layout } from "./layouts.js";
