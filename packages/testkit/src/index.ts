export { startHungServer, type HungServer } from "./hung-peer.js";
export { settlesWithin, withGcPressure, type Settled } from "./gc.js";
export { tarOf, untar } from "./tar.js";
