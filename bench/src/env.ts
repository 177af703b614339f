// The only place the runner reads the environment: the test kit's service addresses (the same
// defaults as scripts/lib.sh, which exports them).
export { loadServices } from "@m1l0/testkit";
