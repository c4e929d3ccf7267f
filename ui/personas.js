// The index page: "Open another persona" goes to /dashboard/<id>.
const form = document.getElementById('open-form');
form?.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = document.getElementById('persona-input').value.trim();
  if (id) location.assign(`/dashboard/${encodeURIComponent(id)}`);
});
