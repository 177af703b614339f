import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-control-regex": "off",
      // Node 20 can garbage-collect a timeout held only inside AbortSignal.any (nodejs/node#57736):
      // deadlines go through AbortScope / withDeadline of @m1l0/config instead
      "no-restricted-properties": [
        "error",
        { object: "AbortSignal", property: "any", message: "use AbortScope from @m1l0/config (nodejs/node#57736)" },
        { object: "AbortSignal", property: "timeout", message: "use AbortScope / withDeadline from @m1l0/config (nodejs/node#57736)" },
      ],
    },
  },
);
