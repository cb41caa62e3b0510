@secrets @intervention
Feature: A keyed call an operator fixes carries the key and records none of it
  When an operator retries a call a crashed worker left, or holds a call
  between its attempts and lets it go, the order service still gets the
  project's API key with every request, and the key still reaches no log.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                                                                                                  | then |
      | map  | transform | {id: order.id, total: order.sum}                                                                      | push |
      | push | http_call | POST the mapped order to /orders with the "orders-api" secret, up to 3 attempts, backing off 1 minute | done |
      | done | terminate | succeeded                                                                                             |      |
    And "acme" keeps the order service's API key in its vault as "orders-api"

  @crash
  Scenario: A keyed call left by a crashed worker and retried by hand carries the key
    Given a run of "order-sync" that is left in the middle of "push" by a crashed worker
    When "dana@acme.example" retries "push" because "the worker that held it died"
    And a worker starts
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  Scenario: A keyed call held between its attempts makes its next attempt with the key once let go
    Given a run of "order-sync" that is between attempts of "push"
    When "dana@acme.example" pauses the run because "checking the order service"
    And "dana@acme.example" unpauses the run because "the order service is fine"
    And the clock moves forward 1 minute
    Then the run succeeds
    And every attempt at "push" carried the same idempotency key
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it
