// The feedproxy page's live preview and copy button. The page works without this file:
// it only redraws what the server renders, from /preview.json, as the form changes.
// Data from the request or upstream is only ever set as textContent or an attribute.
"use strict";

(function () {
  const DEBOUNCE_MS = 300;
  const HINTS = {q: "q-hint", digest: "digest-hint"};  // the hint each control is always described by
  const form = document.getElementById("feed-form");
  const error = document.getElementById("form-error");
  const feedBox = document.getElementById("feed-box");
  const feedMissing = document.getElementById("feed-missing");
  const feedUrl = document.getElementById("feed-url");
  const subscribe = document.getElementById("subscribe");
  const opml = document.getElementById("opml");
  const copy = document.getElementById("copy");
  const copyStatus = document.getElementById("copy-status");
  const status = document.getElementById("preview-status");
  const list = document.getElementById("papers");
  const chartFigure = document.getElementById("chart-figure");
  const chart = document.getElementById("chart");
  const chartTitle = document.getElementById("chart-title");
  const chartSummary = document.getElementById("chart-summary");
  const chartRows = document.getElementById("chart-rows");
  const SVG = "http://www.w3.org/2000/svg";
  const examples = document.querySelectorAll("a.example");
  let timer = null;
  let inFlight = null;

  // The form's values, leaving out empty ones and choices left at their default (the server's apply).
  function formParams() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      const control = form.elements.namedItem(name);
      const unchanged = control && control.dataset && control.dataset.default === value;
      if (String(value).trim() !== "" && !unchanged) params.append(name, value);
    }
    return params;
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  // Mark the control the message is about, as the server-rendered page does.
  function showError(message, parameter) {
    error.textContent = message || "";
    error.hidden = !message;
    for (const control of form.elements) {
      if (!control.name) continue;
      const hint = HINTS[control.name] ? [HINTS[control.name]] : [];
      const ids = message && control.name === parameter ? hint.concat("form-error") : hint;
      if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
      else control.removeAttribute("aria-describedby");
      if (message && control.name === parameter) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    }
  }

  function showFeed(body) {
    const has = Boolean(body.feed_url);
    feedBox.hidden = !has;
    feedMissing.hidden = has;
    if (!has) return;
    feedUrl.value = body.feed_url;
    subscribe.href = body.feed_url;
    opml.href = body.opml_url;
    copyStatus.textContent = "";
  }

  function showPapers(papers) {
    const items = papers.map(function (paper) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = paper.url;
      // The searched words are marked, as the server renders them; all text goes in as text.
      for (const [text, marked] of paper.title_parts || [[paper.title, false]]) {
        if (marked) {
          const mark = document.createElement("mark");
          mark.textContent = text;
          link.append(mark);
        } else {
          link.append(text);
        }
      }
      const meta = document.createElement("span");
      meta.className = "meta";
      const date = document.createElement("time");
      date.dateTime = paper.published;
      date.textContent = paper.published.slice(0, 10);
      meta.append(date, " · " + plural(paper.upvotes, "upvote"));
      if (paper.organization) {
        const org = document.createElement("span");
        org.className = "org";
        org.textContent = paper.organization;
        meta.append(" · ", org);
      }
      if (paper.github_repo) {
        const code = document.createElement("a");
        code.className = "code";
        code.href = paper.github_repo;
        code.textContent = "code";
        meta.append(" · ", code);
        if (paper.github_stars !== null) meta.append(" (" + plural(paper.github_stars, "star") + ")");
      }
      const similar = document.createElement("a");
      similar.className = "similar";
      similar.href = paper.similar_url;
      similar.textContent = "more like this";
      meta.append(" · ", similar);
      item.append(link, " ", meta);
      if (paper.why) {
        const why = document.createElement("span");
        why.className = "why";
        why.textContent = paper.why;
        item.append(why);
      }
      return item;
    });
    list.replaceChildren(...items);
  }

  // The chart of matching papers per week, laid out by the server: one rect per week with matches.
  function showChart(data) {
    chartFigure.hidden = !data;
    if (!data) return;
    chart.setAttribute("viewBox", "0 0 " + data.width + " " + data.height);
    chartTitle.textContent = data.summary;
    chartSummary.textContent = data.summary;
    const bars = data.bars.map(function (bar) {
      const rect = document.createElementNS(SVG, "rect");
      for (const name of ["x", "y", "width", "height"]) rect.setAttribute(name, String(bar[name]));
      const title = document.createElementNS(SVG, "title");
      title.textContent = bar.label;
      rect.append(title);
      return rect;
    });
    chart.replaceChildren(chartTitle, ...bars);
    chartRows.replaceChildren(...data.bars.map(function (bar) {
      const row = document.createElement("tr");
      for (const text of [bar.week, String(bar.count)]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }));
  }

  function show(httpStatus, body) {
    const refused = httpStatus >= 400 && httpStatus < 500; // the parameters: the user can fix them
    showError(refused ? body.error : "", body.parameter || "q");
    showFeed(refused ? {} : body);
    showPapers(body.papers || []);
    showChart(httpStatus === 200 ? body.chart : null);
    if (httpStatus === 200) {
      status.textContent = body.count ? plural(body.count, "paper") + ", as the feed lists them." : "No papers match.";
    } else if (refused) {
      status.textContent = "";
    } else {
      status.textContent = body.error || "The preview is not available (HTTP " + httpStatus + ").";
    }
  }

  async function update() {
    clearTimeout(timer);
    if (inFlight) inFlight.abort();
    const request = (inFlight = new AbortController());
    const params = formParams();
    let response, text;
    try {
      response = await fetch(form.dataset.previewUrl + "?" + params, { signal: request.signal });
      text = await response.text();
    } catch (err) {
      if (err.name !== "AbortError") status.textContent = "The preview could not be loaded: " + err.message;
      return;
    }
    if (request !== inFlight) return; // a newer update has started
    let body;
    try {
      body = JSON.parse(text);
    } catch (err) {
      body = { error: text.trim() }; // a plain-text refusal, e.g. a query string too long
    }
    show(response.status, body);
    // Keep the address shareable and reloadable: the page URL carries the same parameters.
    const search = body.feed_url ? new URL(body.feed_url).search : "?" + params;
    history.replaceState(null, "", form.getAttribute("action") + search);
    // The syntax examples keep the chosen format, limit and the rest, as the server renders them.
    for (const link of examples) {
      const kept = new URLSearchParams(params);
      kept.delete("q");
      link.href = form.getAttribute("action") + "?" + new URLSearchParams([["q", link.dataset.q], ...kept]);
    }
  }

  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(update, DEBOUNCE_MS);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault(); // no reload needed: show the result at once
    update();
  });

  copy.hidden = false;
  copy.addEventListener("click", async function () {
    try {
      await navigator.clipboard.writeText(feedUrl.value);
      copyStatus.textContent = "Copied.";
    } catch (err) {
      // No Clipboard API (plain http on another host) or no permission: select it for Ctrl+C.
      feedUrl.focus();
      feedUrl.select();
      copyStatus.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
    }
  });
})();
