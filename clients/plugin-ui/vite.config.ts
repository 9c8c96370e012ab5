import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// `base: "./"`: dist/ works from any folder of any static server, and from Framer's CDN.
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: { target: "es2022", sourcemap: true },
});
