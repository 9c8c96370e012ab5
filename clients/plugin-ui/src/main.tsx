import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { startInFramer } from "./framer";
import "./styles.css";

const root = createRoot(document.getElementById("root")!);

startInFramer()
  .catch(() => null) // Framer unavailable: run standalone
  .then((project) => {
    root.render(
      <StrictMode>
        <App project={project} />
      </StrictMode>,
    );
  });
