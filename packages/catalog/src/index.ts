export {
  CatalogFileError,
  catalogFromEnv,
  DEFAULT_CATALOG_FILE,
  LOCAL_ADDITIONS_FILE,
  LOCAL_OVERRIDES_FILE,
  loadCatalog,
  resolveBaseImage,
  supportedCombinations,
  type BaseImageQuery,
  type Catalog,
  type CatalogEnv,
  type CatalogEntry,
  type ResolvedBase,
  type Resource,
} from "./catalog.js";
export { isImageReference } from "@m1l0/config";
