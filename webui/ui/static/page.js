() => {
  // Runs once when the page has loaded (Blocks.launch(js=...)).  Everything here reads
  // and writes the page only; nothing talks to the server.

  // -- the reply streams inside the chat ----------------------------------------------------
  // While a reply streams the server updates only the hidden #chat-live box (a small
  // diff per piece, whatever the chat's length); the Chatbot shows the reply's bubble
  // with a cursor.  This copies the live box's rendered nodes, already sanitized by
  // Gradio's Markdown, into that bubble (cloned, never re-parsed as HTML).  When the
  // reply ends the live box empties and the Chatbot's own message takes over.
  const CURSOR = "\u258d";
  let copied = null;
  const replyBubble = () => {
    const bots = document.querySelectorAll("#chatbot [data-testid=bot]");
    const last = bots[bots.length - 1];
    if (!last) return null;
    const content = last.querySelector(".message-content") || last;
    if (content.querySelector(":scope > .webui-live")) return content;
    // The message's own text: chat_marks.js puts a name and version arrows around it.
    return content.textContent.trim().endsWith(CURSOR) ? content : null;
  };
  const mirror = () => {
    const live = document.querySelector("#chat-live");
    const source = live && (live.querySelector(".md") || live.querySelector(".prose"));
    const text = source ? source.textContent : "";
    const content = replyBubble();
    // A thinking model's reply streams its thinking into the open thinking block first;
    // when the answer starts that block folds and the answer's bubble takes the copy, so
    // a copy left anywhere else goes (webui/ui/thinking_ui.py).
    document.querySelectorAll("#chatbot .webui-live").forEach((node) => {
      if (node.parentElement === content) return;
      node.parentElement.classList.remove("webui-streaming");
      node.remove();
    });
    if (!content) return;
    let copy = content.querySelector(":scope > .webui-live");
    if (!text.trim()) {
      if (copy) copy.remove();
      content.classList.remove("webui-streaming");
      copied = null;
      return;
    }
    if (copy && copied === text) return;  // our own change, seen by the observer
    if (!copy) {
      copy = document.createElement("div");
      copy.className = "webui-live md chatbot prose";
      content.appendChild(copy);
      content.classList.add("webui-streaming");
    }
    const wrap = document.querySelector("#chatbot .bubble-wrap");
    const atBottom = wrap && wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight < 60;
    copy.replaceChildren(...[...source.childNodes].map((node) => node.cloneNode(true)));
    copied = text;
    if (atBottom) wrap.scrollTop = wrap.scrollHeight;
  };

  // -- when each message was written, on hover ---------------------------------------------------
  const stamp = () => {
    let times = [];
    try { times = JSON.parse(document.querySelector("#chat-times textarea")?.value || "[]"); } catch (e) { return; }
    const messages = document.querySelectorAll("#chatbot [data-testid=user], #chatbot [data-testid=bot]");
    messages.forEach((message, i) => {
      const when = times[i] ? new Date(times[i] * 1000).toLocaleString() : "";
      if (when && message.title !== when) message.title = when;
    });
  };

  // -- things from elsewhere, shown as links ----------------------------------------------------
  // The page's Content-Security-Policy (webui/content_policy.py) lets it load nothing from
  // another origin, so an image a message names elsewhere (Markdown, <img>, SVG <image>,
  // <video>) would show as a broken picture.  It becomes a link to that address instead,
  // which the browser follows only if the user clicks it.
  const ELSEWHERE = "img[src], video[src], audio[src], source[src], track[src], image, iframe[src], embed[src], object[data]";
  const elsewhere = (address) => {
    if (!address) return false;
    try {
      const url = new URL(address, document.baseURI);
      return url.protocol !== "data:" && url.protocol !== "blob:" && url.origin !== location.origin;
    } catch (e) { return false; }
  };
  const asLinks = () => {
    document.querySelectorAll(ELSEWHERE).forEach((node) => {
      const address = node.getAttribute("src") || node.getAttribute("href") ||
        node.getAttribute("xlink:href") || node.getAttribute("data");
      if (!elsewhere(address)) return;
      const link = document.createElement("a");
      link.href = address;
      link.target = "_blank";
      link.rel = "noopener noreferrer nofollow";
      link.className = "webui-elsewhere";
      link.title = "Not loaded (from another site): " + address;
      link.textContent = "\u{1F5BC} " + (node.getAttribute("alt") || address);
      // An SVG's <image> and a <video>'s <source> go with what holds them.
      const tag = node.tagName.toLowerCase();
      const holder = tag === "image" ? node.closest("svg") : (tag === "source" || tag === "track") ? node.closest("video, audio") : null;
      (holder || node).replaceWith(link);
    });
  };

  // -- editing your own message starts from what you typed ----------------------------------------
  // The chat shows a user's text with its tags and entities escaped, so they show as typed
  // (webui/chat/display.py `as_typed`); the Chatbot's editor starts from that escaped text.
  // This turns it back (a copy of display.py's `typed`, its exact inverse) and tells the
  // editor, so the edit sent is the text as the user means it.
  const CODE = /(^|\n)(```|~~~)[^\n]*\n[\s\S]*?(\n\2[^\n]*(?=\n|$)|$)|(`+)[^`\n][\s\S]*?\4/g;
  const ESCAPED = /&lt;(?=[A-Za-z\/!?])|&amp;(?=#?[A-Za-z0-9]+;)/g;
  const unescapeMarkup = (part) => part.replace(ESCAPED, (found) => (found === "&lt;" ? "<" : "&"));
  const typed = (text) => {
    let out = "", last = 0;
    for (const code of text.matchAll(CODE)) {
      out += unescapeMarkup(text.slice(last, code.index)) + code[0];
      last = code.index + code[0].length;
    }
    return out + unescapeMarkup(text.slice(last));
  };
  const asTyped = () => {
    document.querySelectorAll("#chatbot .user textarea").forEach((box) => {
      if (box.dataset.webuiTyped) return;
      box.dataset.webuiTyped = "1";
      const text = typed(box.value);
      if (text === box.value) return;
      box.value = text;
      box.dispatchEvent(new Event("input", { bubbles: true }));
    });
  };

  let scheduled = false;
  const refresh = () => {
    scheduled = false;
    mirror();
    asLinks();
    stamp();
    asTyped();
  };
  new MutationObserver(() => {
    if (!scheduled) { scheduled = true; requestAnimationFrame(refresh); }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
  // A hidden textarea's value changes without a DOM mutation: look now and then as well.
  setInterval(stamp, 1000);

  // -- keyboard shortcuts (Text Generation WebUI's) ------------------------------------------------
  // Captured before Gradio's own handlers: Ctrl+Enter in the message box must
  // regenerate, not also send.
  const press = (...ids) => ids.some((id) => {
    const button = document.getElementById(id);
    if (!button || button.offsetParent === null || button.disabled) return false;
    button.click();
    return true;
  });
  const shortcuts = [
    [(e) => e.key === "Escape", ["chat-stop", "default-stop", "notebook-stop"]],
    [(e) => e.key === "Enter" && e.ctrlKey && !e.shiftKey && !e.altKey, ["chat-regenerate"]],
    [(e) => e.key === "Enter" && e.altKey && !e.ctrlKey, ["chat-continue"]],
    [(e) => e.key === "Backspace" && e.ctrlKey && e.shiftKey, ["chat-remove-last"]],
    [(e) => e.key.toLowerCase() === "m" && e.ctrlKey && e.shiftKey, ["chat-impersonate"]],
  ];
  document.addEventListener("keydown", (event) => {
    for (const [matches, ids] of shortcuts) {
      if (matches(event) && press(...ids)) {
        event.preventDefault();
        event.stopPropagation();
        return;
      }
    }
  }, true);

  // -- dark theme: the system's setting unless the toggle chose one ----------------------------------
  const applyTheme = () => {
    const chosen = localStorage.getItem("webui-theme");
    if (chosen) document.body.classList.toggle("dark", chosen === "dark");
  };
  applyTheme();
  window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener("change", () => setTimeout(applyTheme));
  document.addEventListener("click", (event) => {
    if (!event.target.closest("#theme-toggle")) return;
    const dark = !document.body.classList.contains("dark");
    document.body.classList.toggle("dark", dark);
    localStorage.setItem("webui-theme", dark ? "dark" : "light");
  });
}
