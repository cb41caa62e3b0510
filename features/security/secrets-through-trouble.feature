@secrets
Feature: A project's API key survives crashes, faults and fixes without reaching a log
  The key a workflow names travels with every request, and the promise that it
  stays out of every log must hold on the bad days too: when the database
  crashes with a request in flight, when an operator corrects the order or
  starts the call again, when a dashboard watches a worker die mid-call, and at
  every crash point a keyed order passes.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                                                          | then |
      | map  | transform | {id: order.id, total: order.sum}                              | push |
      | push | http_call | POST the mapped order to /orders with the "orders-api" secret | done |
      | done | terminate | succeeded                                                     |      |
    And "acme" keeps the order service's API key in its vault as "orders-api"

  @db-crash
  Scenario: A keyed order whose database crashes after the order was sent carries the key and records none of it
    Given the worker will stall after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And the database crashes and restarts
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  @intervention
  Scenario: A refused keyed order resumed by an operator is sent again with the key, and the key stays out of the log
    Given the order service answers every order with 402
    And "acme" delivers an order webhook to "order-sync"
    And the run fails because "402"
    When the order service answers normally again
    And "dana@acme.example" resumes the run from "push" because "the customer paid the outstanding invoice"
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  @intervention
  Scenario: A keyed follow-up whose order an operator corrected while it waited sends the corrected order with the key
    Given the project "acme" with the workflow "keyed-follow-up":
      | step   | type      | does                                                      | then   |
      | wait   | delay     | wait 1 hour                                               | remind |
      | remind | http_call | POST the order to /reminders with the "orders-api" secret | done   |
      | done   | terminate | succeeded                                                 |        |
    And a run of "keyed-follow-up" that is waiting in "wait"
    When "lee@acme.example" patches the run's input because "the customer agreed a discount", with:
      """json
      { "order": { "sum": 38.25 } }
      """
    And the clock moves forward 1 hour
    Then the run succeeds
    And the order service received an order worth 38.25
    And the order service received "acme"'s API key with every order

  @realtime @crash
  Scenario: A dashboard watching a keyed order whose worker dies mid-call sees the run as its log holds it, key-free
    Given "Priya" opens the live log of "acme"
    And the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And "Priya" sees the run exactly as its run log holds it

  @db-faults
  Scenario: A keyed follow-up whose timer fires while the database cannot be reached sends its reminder once, with the key
    Given the project "acme" with the workflow "keyed-follow-up":
      | step   | type      | does                                                      | then   |
      | wait   | delay     | wait 1 hour                                               | remind |
      | remind | http_call | POST the order to /reminders with the "orders-api" secret | done   |
      | done   | terminate | succeeded                                                 |        |
    And the worker will stall when the timer of "wait" fires
    When "acme" delivers an order webhook to "keyed-follow-up"
    And the run is waiting in "wait"
    And the clock moves forward 1 hour
    And the database is unreachable for 1 second
    Then the run succeeds
    And the order service received the order exactly once
    And the order service received "acme"'s API key with every order

  @sweep @db-crash
  Scenario: Crash points of a keyed order meet a database crash, and every faulted order carries the key
    Given "acme" has run a reference order through "order-sync", noting every crash point it passed
    When the order is run again once per crash point, and at each one the database crashes and restarts
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And the order service took every faulted order exactly once
    And the order service received "acme"'s API key with every order
