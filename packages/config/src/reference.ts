// Docker image reference grammar (distribution/reference), without IPv6 hosts:
//   [domain[:port]/]path-component[/path-component...][:tag][@digest]
// No `$`, whitespace or leading `-`, so a reference is also safe after FROM.
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]+)?`;
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
const DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";

const IMAGE_REFERENCE = new RegExp(`^(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*(?::${TAG})?(?:@${DIGEST})?$`);

/** True for a well-formed image reference such as `python:3.11-slim` or `ghcr.io/org/img:1@sha256:…`. */
export function isImageReference(value: string): boolean {
  return value.length <= 512 && IMAGE_REFERENCE.test(value);
}
