//! The browser libraries, embedded: htmx 2.0.11 and uPlot 1.6.32, taken
//! once from the npm registry (`npm pack htmx.org@2.0.11`, `npm pack
//! uplot@1.6.32`) with their licences (`assets/*.LICENSE`). No CDN, no
//! Node at build or run time.

/// htmx (BSD Zero Clause).
pub const HTMX_JS: &[u8] = include_bytes!("../assets/htmx.min.js");
/// uPlot (MIT).
pub const UPLOT_JS: &[u8] = include_bytes!("../assets/uPlot.iife.min.js");
/// uPlot's stylesheet.
pub const UPLOT_CSS: &[u8] = include_bytes!("../assets/uPlot.min.css");
/// The console's own script: sliders that keep each major at 100, and the
/// live traffic chart.
pub const CONSOLE_JS: &[u8] = include_bytes!("../assets/console.js");
/// The console's stylesheet.
pub const CONSOLE_CSS: &[u8] = include_bytes!("../assets/console.css");
/// The licences of what is embedded.
pub const LICENSES: &str = concat!(
    "htmx 2.0.11\n",
    include_str!("../assets/htmx.LICENSE"),
    "\n\nuPlot 1.6.32\n",
    include_str!("../assets/uPlot.LICENSE"),
);

/// An embedded file by its name under `/assets/`: (content type, bytes).
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match name {
        "htmx.min.js" => ("text/javascript", HTMX_JS),
        "uPlot.iife.min.js" => ("text/javascript", UPLOT_JS),
        "uPlot.min.css" => ("text/css", UPLOT_CSS),
        "console.js" => ("text/javascript", CONSOLE_JS),
        "console.css" => ("text/css", CONSOLE_CSS),
        "LICENSES.txt" => ("text/plain; charset=utf-8", LICENSES.as_bytes()),
        _ => return None,
    })
}
