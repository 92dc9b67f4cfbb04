"""Session tab: which extensions are available and enabled, and which are faulty.

Enabling is saved to settings.yaml.  "Apply now" also restarts the UI (not the
process: the loaded model, the API and running requests carry on) with the chosen
extensions; the page reloads itself.  Only names that discovery found are accepted,
whatever the request says (docs/SECURITY.md).
"""

from __future__ import annotations

import gradio as gr

from webui.paths import NameRefused, pick
from webui.runtime import Runtime
from webui.ui.common import Shared

# After "Apply now": wait for the old UI to close, then reload once the new one answers.
RELOAD_WHEN_BACK = """
async () => {
  await new Promise((r) => setTimeout(r, 3000));
  for (let i = 0; i < 60; i++) {
    try {
      const answer = await fetch(window.location.href, {cache: "no-store"});
      if (answer.ok) { window.location.reload(); return; }
    } catch (e) {}
    await new Promise((r) => setTimeout(r, 1000));
  }
}
"""


def extensions_table(runtime: Runtime) -> str:
    host = runtime.extensions
    if not host.available:
        return "No extensions found in `extensions/`, `user_data/extensions/` or installed packages."
    startup = {f.extension: f for f in host.startup_faults}
    rows = ["| extension | from | status |", "|---|---|---|"]
    for name, source in host.available.items():
        loaded = host.get(name)
        if loaded is not None and loaded.fault is not None:
            status = f"⚠️ faulty ({loaded.fault.hook}): {loaded.fault.message}"
        elif loaded is not None:
            status = "✅ loaded"
        elif name in startup:
            status = f"⛔ not loaded ({startup[name].hook}): {startup[name].message}"
        else:
            status = "off"
        rows.append(f"| {name} | {source.kind} | {_cell(status)} |")
    return "\n".join(rows)


def faults_text(runtime: Runtime) -> str:
    faults = runtime.extensions.faults()
    if not faults:
        return "No faults."
    return "\n\n".join(f"== {f.extension} · {f.hook} ==\n{f.traceback.strip()}" for f in faults)


def _cell(text: str) -> str:
    # Table cells: one line, no pipes; gr.Markdown sanitizes HTML.
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def render(runtime: Runtime, shared: Shared) -> None:
    host = runtime.extensions
    gr.Markdown("### Extensions\nExtensions are trusted code: they run inside webui with your rights. "
                "Enable only those you trust.")
    table = gr.Markdown(extensions_table(runtime), elem_id="session-extensions")
    enabled = gr.Dropdown(
        list(host.available), value=[n for n in runtime.settings.extensions if n in host.available],
        multiselect=True, label="Enabled extensions, in order", elem_id="session-enabled",
        info="Saved to settings.yaml. Apply now restarts the UI (not the process); loaders and API "
             "routes that extensions register change only when webui itself restarts.",
    )
    with gr.Row():
        apply = gr.Button("Apply now (restarts the UI)", variant="primary", elem_id="session-apply")
        save = gr.Button("Save for next start", elem_id="session-save")
        refresh = gr.Button("Refresh status", elem_id="session-refresh")
    note = gr.Markdown(elem_id="session-note")
    faults = gr.Code(faults_text(runtime), label="Faults (with tracebacks)", language=None,
                     interactive=False, elem_id="session-faults")

    def checked(names) -> list[str]:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise gr.Error("expected a list of extension names")
        listing = {name: source.path or source.where for name, source in host.available.items()}
        try:
            for name in names:
                pick(name, listing, "extension")  # type: ignore[arg-type]
        except NameRefused as exc:
            raise gr.Error(str(exc)) from None
        ordered = list(dict.fromkeys(names))
        warning = runtime.save_setting("extensions", ordered, "enabled extensions")
        if warning:
            raise gr.Error(f"Not saved: {warning}")
        return ordered

    def save_enabled(names):
        shown = ", ".join(checked(names)) or "none"
        return f"Saved. Enabled at the next start of webui, in this order: {shown}."

    def apply_now(names):
        ordered = checked(names)
        runtime.ui_restart.request(ordered)
        return f"Restarting the UI with: {', '.join(ordered) or 'no extensions'}. The page reloads by itself."

    save.click(save_enabled, enabled, note, api_name="session_save_extensions")
    apply.click(apply_now, enabled, note, api_name="session_apply_extensions").then(None, js=RELOAD_WHEN_BACK)
    refresh.click(lambda: (extensions_table(runtime), faults_text(runtime)), None, [table, faults],
                  api_name="session_refresh")
