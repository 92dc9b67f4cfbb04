() => {
  // Names and version arrows on the chat's messages (webui/ui/chat_marks.py sends them in
  // the hidden #chat-marks box, an entry per message the Chatbot shows); and Stop shown in
  // Send's place only while something runs.  Reads and writes the page only; an arrow
  // works through the chat's own "Message" number and ◀ / ▶ buttons.
  const messages = () => document.querySelectorAll("#chatbot [data-testid=user], #chatbot [data-testid=bot]");
  const flip = (number, id) => {
    const field = document.querySelector("#chat-picked input");
    const button = document.getElementById(id);
    if (!field || !button) return;
    field.value = String(number);
    field.dispatchEvent(new Event("input", { bubbles: true }));
    field.dispatchEvent(new Event("change", { bubbles: true }));
    setTimeout(() => button.click());  // after Gradio has taken the number
  };
  const arrow = (text, label, number, id) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "webui-version-step webui-version-" + text;
    button.setAttribute("aria-label", label);
    button.addEventListener("click", (event) => { event.stopPropagation(); flip(number, id); });
    return button;
  };
  // A message's own text, without the name and arrows put on it here.
  const ownText = (node) => (node.querySelector(".message-content") || node).textContent.trim();
  let shownFor = "";
  const mark = () => {
    const box = document.querySelector("#chat-marks textarea");
    let marks = [];
    try { marks = JSON.parse(box?.value || "[]"); } catch (e) { return; }
    const nodes = [...messages()];
    const key = box?.value + "|" + nodes.length + "|" +
      nodes.filter((n) => n.dataset.webuiName || n.querySelector(":scope > .webui-versions")).length;
    if (key === shownFor) return;
    shownFor = key;
    nodes.forEach((node, i) => {
      // Drawn by CSS from attributes (chat_marks.css): the message's own text, what
      // copying or reading it gives, stays the message alone.
      const entry = marks[i] || {};
      const streaming = ownText(node).endsWith("\u258d") || node.querySelector(".webui-live");
      if (entry.name) {
        if (node.dataset.webuiName !== entry.name) node.dataset.webuiName = entry.name;
      } else if (node.dataset.webuiName) delete node.dataset.webuiName;
      let versions = node.querySelector(":scope > .webui-versions");
      const [index, count] = entry.version || [1, 1];
      if (count > 1 && !streaming) {
        const label = `${index}/${count}`;
        if (!versions || versions.dataset.label !== label + ":" + entry.number) {
          versions?.remove();
          versions = document.createElement("div");
          versions.className = "webui-versions";
          versions.dataset.label = label + ":" + entry.number;
          versions.dataset.at = label;
          versions.setAttribute("aria-label", `version ${index} of ${count}`);
          versions.append(arrow("previous", "previous version", entry.number, "chat-prev"),
                          arrow("next", "next version", entry.number, "chat-next"));
          node.append(versions);
        }
      } else if (versions) versions.remove();
    });
  };

  // -- Stop in Send's place while something runs ------------------------------------------------
  // Gradio marks the outputs of a running event (a status tracker that is "pending" or
  // "generating"); the chat's replies, Continue, Impersonate and tool calls all write to
  // the chat or the message box.
  const RUNNING = ["#chatbot", "#chat-stats", "#chat-input"].map(
    (id) => `${id} .wrap.pending, ${id} .wrap.generating, ${id} .webui-streaming`).join(", ");
  const running = () => Boolean(document.querySelector(RUNNING)) ||
    [...messages()].slice(-1).some((node) => ownText(node).endsWith("\u258d"));
  // The class goes on the chat's column: Gradio scopes the page's CSS inside its own
  // container, so a class on <body> would not be seen by it.
  const swap = () => {
    document.querySelector("#chat-main")?.classList.toggle("webui-chat-running", running());
  };

  let scheduled = false;
  new MutationObserver(() => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; mark(); swap(); });
  }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true,
                              attributeFilter: ["class"] });
  // The hidden box's value changes without a DOM mutation: look now and then as well.
  setInterval(() => { mark(); swap(); }, 500);
}
