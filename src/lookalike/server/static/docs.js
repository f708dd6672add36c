// The API list from /openapi.json (offline); Swagger UI only when asked, from its CDN.
const SWAGGER = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5";

async function listEndpoints() {
  const doc = await (await fetch("/openapi.json")).json();
  const box = document.querySelector("#endpoints");
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      if (method === "head") continue;
      const div = document.createElement("div");
      div.className = "endpoint";
      div.innerHTML = "<code></code> <span></span>";
      div.querySelector("code").textContent = `${method.toUpperCase()} ${path}`;
      div.querySelector("span").textContent = (op.summary || "") + (op.security ? " (needs the token)" : "");
      box.appendChild(div);
    }
  }
}

function loadSwagger() {
  const css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = `${SWAGGER}/swagger-ui.css`;
  document.head.appendChild(css);
  const js = document.createElement("script");
  js.src = `${SWAGGER}/swagger-ui-bundle.js`;
  js.onload = () => { document.querySelector("#endpoints").hidden = true; window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" }); };
  js.onerror = () => { document.querySelector("#offline-note").append(" Swagger UI could not be loaded (offline?)."); };
  document.head.appendChild(js);
}

document.querySelector("#load-swagger").addEventListener("click", loadSwagger);
listEndpoints();
