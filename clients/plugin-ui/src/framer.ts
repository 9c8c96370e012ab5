/**
 * Framer, when the page runs inside it: the plugin window's size and the project (the site
 * credits are spent for). Standalone in a browser there is no Framer, and nothing here runs.
 */
export interface ProjectInfo {
  id: string;
  name: string;
}

export function insideFramer(location: Location = window.location): boolean {
  return location.hostname.endsWith(".plugins.framercdn.com") && window.parent !== window;
}

/** Show the plugin window (260-400 px wide) and read the project; null outside Framer. */
export async function startInFramer(): Promise<ProjectInfo | null> {
  if (!insideFramer()) return null;
  const { framer } = await import("framer-plugin");
  await framer.showUI({
    position: "top right",
    width: 320,
    height: 560,
    minWidth: 260,
    maxWidth: 400,
    resizable: true,
  });
  const project = await framer.getProjectInfo();
  return { id: project.id, name: project.name };
}
